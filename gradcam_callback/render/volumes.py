"""Pictures of volumes ``(N, C, D, H, W)``: evenly spaced slices and a maximum projection.

A volume cannot be shown whole, so each sample gets a *block*: a row of evenly spaced
slices along one axis (``slice_axis``: 0 depth, 1 height, 2 width), the slice with the
most evidence always among them and framed in yellow, and a last column with the
maximum projections (of the input and of the map) along that axis. The input slices on
top, one overlay row per map below; the caption above names the sample, the prediction,
and which slice holds the most evidence. A page stacks the blocks.

The filmstrip, the GIFs and the class maps of volumes show the maximum projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradcam_callback.ops import resize_maps
from gradcam_callback.render.colormap import heatmap
from gradcam_callback.render.grid import NO_EVIDENCE, annotated_grid, framed
from gradcam_callback.render.overlay import overlay, resize_tiles, to_display, to_uint8

__all__ = ["AXIS_NAMES", "PEAK", "SLICES", "peak_slice", "project", "slice_positions",
           "volume_block", "volume_display"]

SLICES = 6
"""Slices shown per volume (all of them when the axis is shorter)."""
AXIS_NAMES = ("depth", "height", "width")
PEAK = (255, 210, 0)
"""The frame of the slice with the most evidence."""
_PEAK_FRAME = 3
PROJECTION = "max proj."


def volume_display(volumes: Tensor, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, *, joint: bool = False) -> Tensor:
    """Volumes as float RGB ``(N, 3, D, H, W)`` in ``[0, 1]``, by the rules of
    :func:`~gradcam_callback.render.overlay.to_display` (per volume, or the batch jointly).
    """
    if volumes.dim() != 5:
        raise ValueError(f"volumes must be (N, C, D, H, W), got shape {tuple(volumes.shape)}")
    count, channels, depth, height, width = volumes.shape
    flat = volumes.detach().float().reshape(count, channels, depth * height, width)
    shown = to_display(flat, mean, std, joint=joint)
    return shown.reshape(count, 3, depth, height, width)


def slice_positions(length: int, count: int = SLICES, peak: int | None = None) -> list[int]:
    """``count`` evenly spaced slice indices of an axis of ``length`` (the centres of equal
    parts), with ``peak`` among them in place of the nearest one.

    Example::

        >>> slice_positions(32), slice_positions(32, peak=9), slice_positions(3)
        ([2, 8, 13, 18, 24, 29], [2, 9, 13, 18, 24, 29], [0, 1, 2])
    """
    if length <= count:
        chosen = list(range(length))
    else:
        chosen = sorted({int((i + 0.5) * length / count) for i in range(count)})
    if peak is not None and peak not in chosen:
        nearest = min(range(len(chosen)), key=lambda i: (abs(chosen[i] - peak), i))
        chosen[nearest] = peak
        chosen.sort()
    return chosen


def peak_slice(volume_map: Tensor, axis: int) -> int:
    """The slice of ``volume_map`` ``(D, H, W)`` along ``axis`` with the most evidence (the
    largest sum; the first of equals).

    Example::

        >>> m = torch.zeros(4, 2, 2); m[2, 0, 0] = 1.0
        >>> peak_slice(m, 0), peak_slice(m, 1)
        (2, 0)
    """
    others = [d for d in range(3) if d != axis]
    return int(volume_map.float().sum(dim=others).argmax())


def project(values: Tensor, axis: int) -> Tensor:
    """The maximum along a volume's spatial ``axis`` of ``(..., D, H, W)``."""
    return values.amax(dim=values.dim() - 3 + axis)


def volume_block(volume: Tensor, rows: Sequence[tuple[str, Tensor]], caption: Sequence[str],
                 wrong: bool, *, axis: int = 0, max_image_size: int | None = 256,
                 colormap: str = "jet", alpha: float = 0.5, show_heatmap: bool = False,
                 slices: int = SLICES) -> Tensor:
    """One sample of the grid: slices along ``axis`` and the maximum projection.

    Args:
        volume: float ``(3, D, H, W)`` display volume in ``[0, 1]``.
        rows: ``(title, map (d, h, w) in [0, 1])`` per row; maps are resized to the volume.
        caption: the sample's caption lines (written above, with the peak slice).
        wrong: frame the block in red (a wrong prediction).
        axis: the spatial axis sliced (0 depth, 1 height, 2 width).

    Returns:
        uint8 ``(3, height, width)``.
    """
    size = tuple(volume.shape[1:])
    maps = [(title, resize_maps(m.detach().float().cpu()[None], size)[0]) for title, m in rows]
    length = size[axis]
    evidence = bool((maps[0][1] > 0).any())  # no positive evidence: no slice is the peak
    peak = peak_slice(maps[0][1], axis) if evidence else None
    chosen = slice_positions(length, slices, peak)
    dim = 1 + axis  # (3, D, H, W)

    def tiles_of(values: Tensor, dim_of: int) -> Tensor:
        cut = [values.select(dim_of, k) for k in chosen] + [values.amax(dim=dim_of)]
        return torch.stack(cut)

    images = resize_tiles(tiles_of(volume, dim), max_image_size)  # (K + 1, 3, a, b)
    tile_size = images.shape[-2:]
    rows_out, titles = [to_uint8(images)], ["input"]
    notes: dict[tuple[int, int], str] = {}
    for title, volume_map in maps:
        cut = resize_maps(tiles_of(volume_map, axis), tile_size).clamp(0, 1)
        if not bool((volume_map > 0).any()):
            notes[(len(rows_out), len(chosen))] = NO_EVIDENCE
        rows_out.append(overlay(images, cut, colormap=colormap, alpha=alpha))
        titles.append(title)
        if show_heatmap:
            rows_out.append(to_uint8(heatmap(cut, colormap=colormap)))
            titles.append("heatmap")
    if peak is not None:
        marked = chosen.index(peak)
        for row in rows_out:
            row[marked] = framed(row[marked], PEAK, _PEAK_FRAME)
    name = AXIS_NAMES[axis]
    captions = [[f"{name} {k}" + (" · peak" if k == peak else "")] for k in chosen]
    captions.append([PROJECTION])
    where = (f"most evidence: {name} slice {peak} of {length}" if peak is not None
             else f"{NO_EVIDENCE} ({length} {name} slices)")
    header = "\n".join([*caption, where])
    block = annotated_grid(rows_out, titles, captions, header=header, notes=notes)
    return framed(block) if wrong else block

