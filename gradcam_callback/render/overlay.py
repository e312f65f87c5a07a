"""Model inputs as pictures, and heatmaps blended over them. Tensors in, tensors out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam_callback._checks import check_float, check_mean_std
from gradcam_callback.ops import min_max
from gradcam_callback.render.colormap import heatmap

__all__ = ["overlay", "resize_tiles", "to_display", "to_uint8"]


def to_display(
    images: Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    joint: bool = False,
) -> Tensor:
    """Model inputs as float RGB in ``[0, 1]``, ready to show.

    With ``mean`` and ``std`` (one value per channel, or one for all) the input
    normalisation is undone (``x * std + mean``). Without them the images are min-max
    scaled: each on its own, or with ``joint=True`` the batch as a whole, so that a
    difference of brightness or tint between images stays visible. One channel becomes
    gray RGB; more than three channels show the first three.

    Raises:
        ValueError: ``mean``/``std`` given alone, with the wrong number of values, or
            not finite; ``std`` not positive.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    images = images.detach().float()
    channels = images.shape[1]
    normalisation = check_mean_std(mean, std, channels)
    if normalisation is not None:
        shape = (1, channels, 1, 1)
        images = images * torch.tensor(normalisation[1], device=images.device).view(shape)
        images = images + torch.tensor(normalisation[0], device=images.device).view(shape)
    else:
        images = min_max(images, start_dim=0 if joint else 1)
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    elif channels > 3:
        images = images[:, :3]
    elif channels == 2:
        images = torch.cat([images, images[:, :1]], dim=1)
    return images.clamp(0, 1)


def overlay(images: Tensor, cams: Tensor, *, colormap: str = "jet", alpha: float = 0.5) -> Tensor:
    """Blend heatmaps of ``cams`` over ``images``.

    Args:
        images: ``(N, 1|3, H, W)`` with values in ``[0, 1]`` (see :func:`to_display`).
        cams: ``(N, H, W)`` maps in ``[0, 1]``.
        colormap: any matplotlib colormap name.
        alpha: weight of the heatmap, in ``[0, 1]``.

    Returns:
        uint8 ``(N, 3, H, W)``.
    """
    check_float("alpha", alpha, minimum=0.0, maximum=1.0)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    rgb = images.float().clamp(0, 1).expand(-1, 3, -1, -1)
    if cams.shape != (rgb.shape[0], *rgb.shape[2:]):
        raise ValueError(
            f"cams must be (N, H, W) = {(rgb.shape[0], *rgb.shape[2:])} to match the images, "
            f"got {tuple(cams.shape)}"
        )
    blended = (1 - alpha) * rgb + alpha * heatmap(cams, colormap=colormap)
    return to_uint8(blended)


def to_uint8(images: Tensor) -> Tensor:
    """Float images in ``[0, 1]`` as uint8."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def resize_tiles(images: Tensor, max_size: int | None, min_size: int = 128) -> Tensor:
    """Resize float ``(N, C, H, W)`` so the longer side is at most ``max_size`` and the
    shorter at least ``min_size`` (when both fit); downscaling is antialiased, upscaling
    uses nearest neighbours so small inputs stay crisp."""
    height, width = images.shape[-2:]
    scale = 1.0
    if min(height, width) < min_size:
        scale = min_size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    if scale == 1.0:
        return images
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if scale < 1:
        return F.interpolate(images, size=size, mode="bilinear", antialias=True,
                             align_corners=False)
    return F.interpolate(images, size=size, mode="nearest")


