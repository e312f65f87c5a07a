"""The class-maps picture: per class, the mean map over many samples, on one scale.

One column per class, one row per grouping ("by prediction": the samples the model called
that class; "by label": the samples that are that class). A class decided by the
top-right corner shows a hot top-right corner in its column, whatever the images. All
tiles share one colour scale (the hottest pixel of the picture is red), so a diffuse
class map looks diffuse instead of being stretched to full contrast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradcam_callback.ops import resize_maps
from gradcam_callback.render.captions import class_name
from gradcam_callback.render.colormap import heatmap
from gradcam_callback.render.grid import annotated_grid
from gradcam_callback.render.overlay import to_uint8

__all__ = ["MAX_CLASSES", "class_maps_grid"]

MAX_CLASSES = 32
"""At most this many classes (columns) are drawn: the ones with the most samples."""
_SHORT_TITLES = {"by prediction": "pred", "by label": "label"}


def class_maps_grid(
    rows: Sequence[tuple[str, Tensor, Tensor]],
    backdrop: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    *,
    tile_size: int = 96,
    colormap: str = "jet",
    alpha: float = 0.6,
    max_classes: int = MAX_CLASSES,
    header: str | None = None,
) -> Tensor:
    """Draw mean maps per class as one captioned picture.

    Args:
        rows: ``(title, mean maps (C, h, w), sample counts (C,))`` per row, e.g.
            ``("by prediction", ...)`` and ``("by label", ...)``.
        backdrop: a display image ``(3, H, W)`` in ``[0, 1]`` (e.g. the mean input) to blend
            the maps over; ``None`` draws bare heatmaps.
        class_names: names of the classes (indices otherwise).
        tile_size: the longer side of each tile in pixels (the maps' aspect is kept).
        colormap: matplotlib colormap name.
        alpha: heatmap opacity over the backdrop.
        max_classes: draw at most this many classes, those with the most samples (summed
            over rows), in class order.
        header: a line across the top (``"max projection along depth"``).

    Returns:
        uint8 ``(3, height, width)``. A class without samples in a row shows a black tile
        and ``n=0``.
    """
    if not rows:
        raise ValueError("class_maps_grid needs at least one row")
    num_classes = rows[0][1].shape[0]
    totals = torch.stack([counts.float() for _, _, counts in rows]).sum(0)
    shown = [c for c in range(num_classes) if totals[c] > 0] or list(range(num_classes))
    if len(shown) > max_classes:
        shown = sorted(sorted(shown, key=lambda c: -float(totals[c]))[:max_classes])
    scale = max(float(maps[shown].max()) for _, maps, _ in rows)
    scale = scale if scale > 0 else 1.0
    height, width = (int(side) for side in rows[0][1].shape[-2:])
    zoom = tile_size / max(height, width)
    size = (max(1, round(height * zoom)), max(1, round(width * zoom)))
    background = None
    if backdrop is not None:
        background = torch.nn.functional.interpolate(
            backdrop.float().unsqueeze(0), size=size, mode="bilinear", align_corners=False
        ).clamp(0, 1)
    tiles, titles = [], []
    for title, maps, counts in rows:
        scaled = resize_maps(maps[shown].float(), size).clamp(min=0) / scale
        colour = heatmap(scaled.clamp(0, 1), colormap=colormap)
        if background is not None:
            colour = (1 - alpha) * background + alpha * colour
        empty = (counts[shown] == 0).view(-1, 1, 1, 1)
        tiles.append(to_uint8(torch.where(empty, 0.0, colour)))
        titles.append(title)
    short = [_SHORT_TITLES.get(title, title) for title, _, _ in rows]
    captions = [[class_name(c, class_names)]
                + [f"{word} n={int(counts[c])}" for word, (_, _, counts) in zip(short, rows,
                                                                             strict=True)]
                for c in shown]
    return annotated_grid(tiles, titles, captions, header=header)
