"""The annotated grid: rows of tiles, captions above each column, titles left of each row.

:func:`annotated_grid` lays out any rows of tiles; :func:`explanation_grid` is *the* picture
of an explanation (inputs, one overlay row per explained target, optional heatmap rows,
captions, red frames on wrong predictions, a note on maps with no positive evidence), used
by the callback, the CLI and the benchmarks alike. Pillow writes the text onto the finished
canvas.

Legibility: text scales with the tiles (``font_size=None``), so the ratio of text height to
picture width, which is what survives when a viewer shrinks the picture into a card (about
320 px in TensorBoard), stays the same for 32 px and 512 px inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from gradcam_callback.ops import resize_maps
from gradcam_callback.render.colormap import heatmap
from gradcam_callback.render.overlay import overlay, to_uint8

__all__ = ["NO_EVIDENCE", "annotated_grid", "explanation_grid", "framed", "no_evidence_notes",
           "region_edges", "stack_blocks"]

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
WRONG = (230, 40, 40)
OUTLINE = (255, 255, 255)
NOTE_BACKGROUND = (0, 0, 0)
GAP = 6
FRAME = 3
MIN_FONT = 13
NO_EVIDENCE = "no positive evidence"


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def annotated_grid(
    rows: Sequence[Tensor],
    row_titles: Sequence[str],
    captions: Sequence[Sequence[str]],
    wrong: Sequence[bool] | None = None,
    *,
    font_size: int | None = None,
    header: str | None = None,
    notes: Mapping[tuple[int, int], str] | None = None,
) -> Tensor:
    """Lay out rows of tiles as one captioned picture.

    Args:
        rows: equally sized uint8 ``(N, 3, H, W)`` tensors, one per row.
        row_titles: a title per row, written to the left of it.
        captions: per column (sample), the lines written above it.
        wrong: per column, draw a red frame around it (a wrong prediction).
        font_size: text size in pixels; ``None`` scales it with the tiles (13 px up to
            156 px wide tiles, then a twelfth of the tile width).
        header: text written across the top, e.g. ``"epoch 3 · step 120"`` (lines
            separated by ``"\n"``).
        notes: text written over single tiles, keyed by ``(row, column)``, e.g. ``"no
            positive evidence"`` on an all-zero map; wrapped to the tile's width.

    Returns:
        uint8 ``(3, height, width)``.
    """
    if not rows or len(rows) != len(row_titles):
        raise ValueError(f"need one title per row: {len(rows)} rows, {len(row_titles)} titles")
    count, _, tile_h, tile_w = rows[0].shape
    if len(captions) != count:
        raise ValueError(f"need captions for {count} columns, got {len(captions)}")
    if font_size is None:
        font_size = max(MIN_FONT, tile_w // 12)
    font = _font(font_size)
    line_h = font_size + 4
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [_wrap_list(lines, tile_w, font, measure) for lines in captions]
    header_lines = header.split("\n") if header else []
    header_h = 0 if not header else line_h * len(header_lines) + 2 * GAP
    caption_h = header_h + GAP + line_h * max((len(c) for c in captions), default=0)
    title_w = GAP * 2 + max(int(measure.textlength(t, font=font)) for t in row_titles)
    col_w = tile_w + 2 * GAP
    width = title_w + count * col_w
    if header:
        width = max(width, *(int(measure.textlength(line, font=font)) + 2 * GAP
                             for line in header_lines))
    height = caption_h + len(rows) * (tile_h + GAP) + GAP

    canvas = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1).repeat(1, height, width)
    for r, row in enumerate(rows):
        top = caption_h + r * (tile_h + GAP)
        for c in range(count):
            left = title_w + c * col_w + GAP
            canvas[:, top : top + tile_h, left : left + tile_w] = row[c]
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(header_lines):
        draw.text((GAP, GAP + i * line_h), line, fill=TEXT, font=font)
    for c, lines in enumerate(captions):
        left = title_w + c * col_w + GAP
        for i, line in enumerate(lines):
            draw.text((left, header_h + GAP // 2 + i * line_h), _fit(line, tile_w, font, draw),
                      fill=TEXT, font=font)
        if wrong is not None and wrong[c]:
            box = (left - GAP + 1, header_h + 1, left + tile_w + GAP - 2, height - 2)
            draw.rectangle(box, outline=WRONG, width=FRAME)
    for r, title in enumerate(row_titles):
        middle = caption_h + r * (tile_h + GAP) + tile_h // 2 - line_h // 2
        draw.text((GAP, middle), title, fill=TEXT, font=font)
    for (r, c), note in (notes or {}).items():
        if not (0 <= r < len(rows) and 0 <= c < count):
            raise ValueError(f"notes: tile ({r}, {c}) is outside the {len(rows)} x {count} grid")
        centre = (title_w + c * col_w + GAP + tile_w // 2, caption_h + r * (tile_h + GAP)
                  + tile_h // 2)
        _note(draw, centre, _wrap(note, tile_w - 2 * GAP, font, draw), font)
    return torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def explanation_grid(
    images: Tensor,
    maps: Sequence[tuple[str, Tensor]],
    captions: Sequence[Sequence[str]],
    wrong: Sequence[bool] | None = None,
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
    show_heatmap: bool = False,
    font_size: int | None = None,
    header: str | None = None,
    outlines: Tensor | None = None,
) -> Tensor:
    """The picture of an explanation: inputs on top, one overlay row per set of maps.

    An overlay tile whose map is zero everywhere (no positive evidence for the target: the
    ReLU removed everything) says so in text, instead of showing a plain blue tile.

    Args:
        images: float display images ``(N, 3, H, W)`` in ``[0, 1]`` (see ``to_display``).
        maps: ``(row title, maps (N, h, w) in [0, 1])`` per row; maps are resized to the
            images' size.
        captions: per column, the lines written above it.
        wrong: per column, whether to frame it in red.
        colormap: matplotlib colormap name.
        alpha: heatmap opacity in the overlays.
        show_heatmap: add the bare heatmap below each overlay row.
        font_size: text size in pixels; ``None`` scales it with the tiles.
        header: a line across the top, e.g. ``"epoch 3 · step 120"``.
        outlines: bool regions ``(N, H, W)`` (any size) whose edge is drawn in white on
            the inputs and the overlays, e.g. a segmentation's predicted region.

    Returns:
        uint8 ``(3, height, width)``.
    """
    edges = None if outlines is None else region_edges(outlines, images.shape[-2:])
    rows, titles = [_outlined(to_uint8(images), edges)], ["input"]
    notes: dict[tuple[int, int], str] = {}
    for title, cams in maps:
        cams = resize_maps(cams.detach().float().cpu(), images.shape[-2:])
        notes.update(no_evidence_notes(cams, row=len(rows)))
        rows.append(_outlined(overlay(images, cams, colormap=colormap, alpha=alpha), edges))
        titles.append(title)
        if show_heatmap:
            rows.append(to_uint8(heatmap(cams, colormap=colormap)))
            titles.append("heatmap")
    return annotated_grid(rows, titles, captions, wrong, font_size=font_size, header=header,
                          notes=notes)


def stack_blocks(blocks: Sequence[Tensor], *, header: str | None = None,
                 font_size: int = MIN_FONT) -> Tensor:
    """Pictures ``(3, h_i, w_i)`` one under the other, left-aligned on the grid's
    background, under an optional ``header`` line: a page of signals or volumes, one
    block per sample.

    Example::

        >>> a, b = torch.zeros(3, 4, 6, dtype=torch.uint8), torch.zeros(3, 5, 8, dtype=torch.uint8)
        >>> tuple(stack_blocks([a, b]).shape)
        (3, 27, 20)
    """
    if not blocks:
        raise ValueError("stack_blocks needs at least one block")
    font = _font(font_size)
    line_h = font_size + 4
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    header_h = line_h + GAP if header else 0
    width = max(int(block.shape[2]) for block in blocks) + 2 * GAP
    if header:
        width = max(width, int(measure.textlength(header, font=font)) + 2 * GAP)
    height = header_h + sum(int(block.shape[1]) + GAP for block in blocks) + GAP
    canvas = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1).repeat(1, height, width)
    top = header_h + GAP
    for block in blocks:
        canvas[:, top : top + block.shape[1], GAP : GAP + block.shape[2]] = block
        top += int(block.shape[1]) + GAP
    if not header:
        return canvas
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    ImageDraw.Draw(picture).text((GAP, GAP), header, fill=TEXT, font=font)
    return torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def framed(picture: Tensor, colour: tuple[int, int, int] = WRONG,
           width: int = FRAME) -> Tensor:
    """``picture`` ``(3, h, w)`` uint8 with a frame ``width`` px wide drawn inside its edge
    (a wrong prediction's red frame around a sample's block)."""
    out = picture.clone()
    paint = torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1)
    out[:, :width, :] = paint
    out[:, -width:, :] = paint
    out[:, :, :width] = paint
    out[:, :, -width:] = paint
    return out


def region_edges(regions: Tensor, size: Sequence[int] | torch.Size) -> Tensor:
    """The edge pixels of bool regions ``(N, h, w)`` at ``size`` (nearest), two pixels
    wide on tiles of 128 px and more: inside pixels with an outside pixel next to them."""
    inside = torch.nn.functional.interpolate(regions.detach().float().cpu()[:, None],
                                             size=tuple(size), mode="nearest")
    width = 2 if min(size) >= 128 else 1
    kernel = 2 * width + 1
    eroded = -torch.nn.functional.max_pool2d(-inside, kernel, stride=1, padding=width)
    return ((inside > 0.5) & (eroded < 0.5))[:, 0]


def _outlined(tiles: Tensor, edges: Tensor | None) -> Tensor:
    if edges is None:
        return tiles
    return torch.where(edges[:, None], torch.tensor(OUTLINE, dtype=torch.uint8).view(1, 3, 1, 1),
                       tiles)


def no_evidence_notes(maps: Tensor, row: int, first_column: int = 0) -> dict[tuple[int, int], str]:
    """``{(row, column): NO_EVIDENCE}`` for each map ``(N, h, w)`` that is nowhere positive."""
    empty = ~(maps.detach().flatten(1) > 0).any(dim=1)
    return {(row, first_column + int(i)): NO_EVIDENCE for i in empty.nonzero().flatten()}


def _fit(text: str, width: int, font: Font, draw: ImageDraw.ImageDraw) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap_list(lines: Sequence[str], width: int, font: Font,
               draw: ImageDraw.ImageDraw) -> list[str]:
    """Caption lines, a line listing items (``"pred: a 0.91, b 0.62"``) that is too wide
    broken after its commas into indented continuation lines; others as they are (cut
    with an ellipsis when drawn)."""
    wrapped: list[str] = []
    for line in lines:
        if ", " not in line or draw.textlength(line, font=font) <= width:
            wrapped.append(line)
            continue
        parts = line.split(", ")
        current = parts[0]
        for part in parts[1:]:
            if draw.textlength(f"{current}, {part}", font=font) <= width:
                current = f"{current}, {part}"
            else:
                wrapped.append(current + ",")
                current = f"  {part}"
        wrapped.append(current)
    return wrapped


def _wrap(text: str, width: int, font: Font, draw: ImageDraw.ImageDraw) -> str:
    """``text`` broken into lines of at most ``width`` pixels, at spaces."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def _note(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, font: Font) -> None:
    """``text`` centred on ``centre``, light on a dark box so it reads on any colour."""
    box = draw.multiline_textbbox(centre, text, font=font, anchor="mm", align="center")
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=NOTE_BACKGROUND)
    draw.multiline_text(centre, text, fill=TEXT, font=font, anchor="mm", align="center")
