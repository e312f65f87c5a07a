"""Pure tensor operations shared by the engine, the metrics and the renderer.

Maps are ``(N, h, w)`` float tensors; every function works on any device and keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["min_max", "resize_maps", "shrink_maps", "shrunk_size"]


_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resize_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Maps ``(N, *S)`` resized to ``size`` of the same rank: linear for signals ``(N, t)``,
    bilinear for images ``(N, h, w)``, trilinear for volumes ``(N, d, h, w)``
    (``align_corners=False``, the convention of ``compute_cam``); returned as they are
    when already that size.

    Example::

        >>> resize_maps(torch.ones(2, 3, 3), (6, 4)).shape
        torch.Size([2, 6, 4])
        >>> resize_maps(torch.ones(2, 5), (20,)).shape
        torch.Size([2, 20])
    """
    size = tuple(int(s) for s in size)
    if size == tuple(maps.shape[1:]):
        return maps
    if len(size) != maps.dim() - 1 or len(size) not in _MODES:
        raise ValueError(f"cannot resize maps {tuple(maps.shape)} to {size}: the size must "
                         "have one entry per spatial dim (1 to 3)")
    return F.interpolate(maps.unsqueeze(1), size=size, mode=_MODES[len(size)],
                         align_corners=False).squeeze(1)


def shrink_maps(maps: Tensor, longest_side: int) -> Tensor:
    """Maps ``(N, *S)`` with the longest side at most ``longest_side`` (aspect kept):
    antialiased bilinear for images, area averaging for signals and volumes.

    Maps already small enough are returned as they are: shrinking never enlarges.

    Example::

        >>> shrink_maps(torch.ones(1, 128, 64), 32).shape
        torch.Size([1, 32, 16])
        >>> shrink_maps(torch.ones(1, 64, 64, 32), 32).shape
        torch.Size([1, 32, 32, 16])
    """
    size = shrunk_size(maps.shape[1:], longest_side)
    if size == tuple(maps.shape[1:]):
        return maps
    if len(size) == 2:
        return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", antialias=True,
                             align_corners=False).squeeze(1)
    return F.interpolate(maps.unsqueeze(1), size=size, mode="area").squeeze(1)


def shrunk_size(size: Sequence[int], longest_side: int) -> tuple[int, ...]:
    """The size that :func:`shrink_maps` gives maps of ``size`` (any rank): the longest
    side at most ``longest_side``, the aspect ratio kept (each side at least 1).

    Example::

        >>> shrunk_size((128, 64), 32), shrunk_size((16, 8), 32)
        ((32, 16), (16, 8))
    """
    sides = tuple(int(side) for side in size)
    scale = longest_side / max(sides)
    if scale >= 1:
        return sides
    return tuple(max(1, round(side * scale)) for side in sides)


def min_max(values: Tensor, *, start_dim: int = 1) -> Tensor:
    """Min-max scale each sample (dims from ``start_dim`` on, jointly) to ``[0, 1]``.

    A sample whose maximum equals its minimum (constant, e.g. all zeros) becomes all
    zeros; the result is never NaN.

    Example::

        >>> min_max(torch.tensor([[[2.0, 4.0]], [[3.0, 3.0]]])).tolist()
        [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    flat = values.flatten(start_dim)
    shape = (*values.shape[:start_dim], *([1] * (values.dim() - start_dim)))
    low = flat.amin(dim=-1).view(shape)
    span = flat.amax(dim=-1).view(shape) - low
    # two passes over the values in the usual case (volumes are millions of voxels): with
    # 0 <= v - low <= span, the quotient is within [0, 1] in floating point too
    scaled = (values - low).div_(torch.where(span > 0, span, 1.0))
    constant = ~(span > 0)  # constant (all values equal) or not finite: all zeros
    if bool(constant.any()):
        scaled = torch.where(constant, 0.0, scaled)
    return scaled
