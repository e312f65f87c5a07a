"""Turn maps into pictures: colormap lookup and overlays. Tensors in, uint8 out.

Knows nothing of models. Colour lookup is a gather from a 256-entry table built once per
colormap from matplotlib, so no Python runs per pixel.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["colormap_lut", "overlay"]


@functools.lru_cache(maxsize=16)
def _lut_cpu(name: str) -> Tensor:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=3)
        raise ValueError(
            f"unknown colormap {name!r}; use any matplotlib colormap name"
            + (f" (closest: {', '.join(map(repr, close))})" if close else "")
        ) from None
    table = cmap(torch.linspace(0, 1, 256).numpy())[:, :3]
    return torch.as_tensor(table, dtype=torch.float32)


def colormap_lut(name: str = "jet", device: torch.device | str = "cpu") -> Tensor:
    """A ``(256, 3)`` float32 RGB table in ``[0, 1]`` for the matplotlib colormap ``name``.

    Raises:
        ValueError: ``name`` is not a matplotlib colormap (the message lists close names).
    """
    return _lut_cpu(name).to(device)


def _as_rgb_unit(images: Tensor) -> Tensor:
    """``(N, C, H, W)`` images with 1 or 3 channels as float RGB in ``[0, 1]``."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}"
        )
    images = images.float()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.clamp(0, 1)


def overlay(images: Tensor, cams: Tensor, *, colormap: str = "jet", alpha: float = 0.5) -> Tensor:
    """Blend heatmaps of ``cams`` over ``images``.

    Args:
        images: ``(N, 1|3, H, W)`` with values in ``[0, 1]`` (undo any normalisation first).
        cams: ``(N, H, W)`` maps in ``[0, 1]``.
        colormap: any matplotlib colormap name.
        alpha: weight of the heatmap, in ``[0, 1]``.

    Returns:
        uint8 ``(N, 3, H, W)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    rgb = _as_rgb_unit(images)
    if cams.shape != (rgb.shape[0], *rgb.shape[2:]):
        raise ValueError(
            f"cams must be (N, H, W) = {(rgb.shape[0], *rgb.shape[2:])} to match the images, "
            f"got {tuple(cams.shape)}"
        )
    lut = colormap_lut(colormap, rgb.device)
    index = (cams.float().clamp(0, 1) * 255).round().long()
    heat = lut[index].permute(0, 3, 1, 2)
    blended = (1 - alpha) * rgb + alpha * heat
    return (blended * 255).round().clamp(0, 255).to(torch.uint8)
