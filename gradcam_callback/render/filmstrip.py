"""Attention over time: a sample's maps across the logged runs, as one picture or frames."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradcam_callback.ops import resize_maps
from gradcam_callback.render.grid import annotated_grid, no_evidence_notes
from gradcam_callback.render.overlay import overlay, to_uint8

__all__ = ["filmstrip", "filmstrip_frames"]


def filmstrip(
    images: Tensor,
    history: Tensor,
    column_titles: Sequence[str],
    row_titles: Sequence[str],
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    header: str | None = None,
) -> Tensor:
    """Attention over time in one picture: a row per sample, a column per logged run.

    A map that is zero everywhere (no positive evidence) says so on its tile.

    Args:
        images: float ``(N, 3, H, W)`` display images in ``[0, 1]``.
        history: ``(R, N, h, w)`` maps in ``[0, 1]``, one batch per run (resized to ``H, W``).
        column_titles: one per run, e.g. ``"epoch 3"``.
        row_titles: one per sample, e.g. ``"#3 dog"`` (dataset index and class).
        colormap: matplotlib colormap name.
        alpha: heatmap opacity in the overlays.
        header: a line across the top, e.g. ``"epochs 0-9 · step 300"``.

    Returns:
        uint8 ``(3, height, width)``; the first column is the plain input.
    """
    runs = _overlays_per_run(images, history, colormap, alpha)  # (R, N, 3, H, W)
    rows = [torch.cat([to_uint8(images[i : i + 1]), runs[:, i]]) for i in range(images.shape[0])]
    captions = [["input"], *([title] for title in column_titles)]
    notes: dict[tuple[int, int], str] = {}
    for i in range(images.shape[0]):
        notes.update(no_evidence_notes(history[:, i], row=i, first_column=1))
    return annotated_grid(rows, row_titles, captions, header=header, notes=notes)


def filmstrip_frames(
    images: Tensor,
    history: Tensor,
    column_titles: Sequence[str],
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> list[list[Tensor]]:
    """Per sample, one captioned uint8 ``(3, h, w)`` frame per run (for animated GIFs)."""
    runs = _overlays_per_run(images, history, colormap, alpha)
    return [
        [annotated_grid([runs[r, i : i + 1]], [""], [[title]],
                        notes=no_evidence_notes(history[r, i : i + 1], row=0))
         for r, title in enumerate(column_titles)]
        for i in range(images.shape[0])
    ]


def _overlays_per_run(images: Tensor, history: Tensor, colormap: str, alpha: float) -> Tensor:
    count, _, height, width = images.shape
    if history.dim() != 4 or history.shape[1] != count:
        raise ValueError(
            f"history must be (runs, {count}, h, w) to match {count} images, got "
            f"{tuple(history.shape)}"
        )
    maps = resize_maps(history.float().flatten(0, 1), (height, width))
    repeated = images.repeat(history.shape[0], 1, 1, 1)
    blended = overlay(repeated, maps.clamp(0, 1), colormap=colormap, alpha=alpha)
    return blended.view(history.shape[0], count, 3, height, width)


