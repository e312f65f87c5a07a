"""Turn maps into pictures: colormap lookup, overlays, annotated grids. Tensors in, uint8 out.

Knows nothing of models. Colour lookup is a gather from a 256-entry table built once per
colormap from matplotlib, so no Python runs per pixel; Pillow is used only to write the
captions onto the finished grid.
"""

from __future__ import annotations

import difflib
import functools
import io
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = [
    "annotated_grid",
    "colormap_lut",
    "encode_image",
    "filmstrip",
    "filmstrip_frames",
    "heatmap",
    "overlay",
    "resize_maps",
    "resize_tiles",
    "to_display",
    "to_uint8",
]

IMAGE_FORMATS = ("png", "jpeg")

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
WRONG = (230, 40, 40)
GAP = 6
FRAME = 3


@functools.lru_cache(maxsize=16)
def _lut_cpu(name: str) -> Tensor:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
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


def to_display(
    images: Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Tensor:
    """Model inputs as float RGB in ``[0, 1]``, ready to show.

    With ``mean`` and ``std`` (one value per channel) the input normalisation is undone
    (``x * std + mean``); without them each image is min-max scaled on its own. One channel
    becomes gray RGB; more than three channels show the first three.

    Raises:
        ValueError: ``mean``/``std`` given alone or with the wrong number of values.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    images = images.detach().float()
    channels = images.shape[1]
    if (mean is None) != (std is None):
        raise ValueError("pass mean and std together (one value per input channel), or neither")
    if mean is not None and std is not None:
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"mean and std need one value per input channel ({channels}), got "
                f"{len(mean)} and {len(std)}"
            )
        shape = (1, channels, 1, 1)
        images = images * torch.tensor(list(std), device=images.device).view(shape)
        images = images + torch.tensor(list(mean), device=images.device).view(shape)
    else:
        low = images.flatten(1).amin(1).view(-1, 1, 1, 1)
        span = images.flatten(1).amax(1).view(-1, 1, 1, 1) - low
        images = (images - low) / torch.where(span > 0, span, 1.0)
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    elif channels > 3:
        images = images[:, :3]
    elif channels == 2:
        images = torch.cat([images, images[:, :1]], dim=1)
    return images.clamp(0, 1)


def heatmap(cams: Tensor, *, colormap: str = "jet") -> Tensor:
    """Colour ``(N, H, W)`` maps in ``[0, 1]``: float RGB ``(N, 3, H, W)`` in ``[0, 1]``."""
    lut = colormap_lut(colormap, cams.device)
    index = (cams.detach().float().clamp(0, 1) * 255).round().long()
    return lut[index].permute(0, 3, 1, 2)


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
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
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


def resize_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Maps ``(N, h, w)`` bilinearly resized to ``size`` (``align_corners=False``, the
    convention of ``compute_cam``); returned as they are when already that size."""
    size = tuple(size)
    if size == tuple(maps.shape[-2:]):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear",
                         align_corners=False).squeeze(1)


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


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
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
    font_size: int = 13,
) -> Tensor:
    """Lay out rows of tiles as one captioned picture.

    Args:
        rows: equally sized uint8 ``(N, 3, H, W)`` tensors, one per row.
        row_titles: a title per row, written to the left of it.
        captions: per column (sample), the lines written above it.
        wrong: per column, draw a red frame around it (a wrong prediction).
        font_size: caption size in pixels.

    Returns:
        uint8 ``(3, height, width)``.
    """
    if not rows or len(rows) != len(row_titles):
        raise ValueError(f"need one title per row: {len(rows)} rows, {len(row_titles)} titles")
    count, _, tile_h, tile_w = rows[0].shape
    if len(captions) != count:
        raise ValueError(f"need captions for {count} columns, got {len(captions)}")
    font = _font(font_size)
    line_h = font_size + 4
    caption_h = GAP + line_h * max((len(c) for c in captions), default=0)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_w = GAP * 2 + max(int(measure.textlength(t, font=font)) for t in row_titles)
    col_w = tile_w + 2 * GAP
    width = title_w + count * col_w
    height = caption_h + len(rows) * (tile_h + GAP) + GAP

    canvas = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1).repeat(1, height, width)
    for r, row in enumerate(rows):
        top = caption_h + r * (tile_h + GAP)
        for c in range(count):
            left = title_w + c * col_w + GAP
            canvas[:, top : top + tile_h, left : left + tile_w] = row[c]
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    for c, lines in enumerate(captions):
        left = title_w + c * col_w + GAP
        for i, line in enumerate(lines):
            draw.text((left, GAP // 2 + i * line_h), _fit(line, tile_w, font, draw), fill=TEXT,
                      font=font)
        if wrong is not None and wrong[c]:
            box = (left - GAP + 1, 1, left + tile_w + GAP - 2, height - 2)
            draw.rectangle(box, outline=WRONG, width=FRAME)
    for r, title in enumerate(row_titles):
        middle = caption_h + r * (tile_h + GAP) + tile_h // 2 - line_h // 2
        draw.text((GAP, middle), title, fill=TEXT, font=font)
    return torch.from_numpy(_as_array(picture)).permute(2, 0, 1).contiguous()


def filmstrip(
    images: Tensor,
    history: Tensor,
    column_titles: Sequence[str],
    row_titles: Sequence[str],
    *,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Tensor:
    """Attention over time in one picture: a row per sample, a column per logged run.

    Args:
        images: float ``(N, 3, H, W)`` display images in ``[0, 1]``.
        history: ``(R, N, h, w)`` maps in ``[0, 1]``, one batch per run (resized to ``H, W``).
        column_titles: one per run, e.g. ``"epoch 3"``.
        row_titles: one per sample.

    Returns:
        uint8 ``(3, height, width)``; the first column is the plain input.
    """
    runs = _overlays_per_run(images, history, colormap, alpha)  # (R, N, 3, H, W)
    rows = [torch.cat([to_uint8(images[i : i + 1]), runs[:, i]]) for i in range(images.shape[0])]
    captions = [["input"], *([title] for title in column_titles)]
    return annotated_grid(rows, row_titles, captions)


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
        [annotated_grid([runs[r, i : i + 1]], [""], [[title]]) for r, title in
         enumerate(column_titles)]
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


def encode_image(picture: Tensor, image_format: str = "png") -> bytes:
    """Encode uint8 ``(3, H, W)`` as PNG or JPEG bytes.

    PNG is lossless and written with zlib level 1: for the noisy, photo-like content of
    CAM grids it is about as small as the default level and several times faster. JPEG
    (quality 90) is several times smaller again and faster still; the captions are light
    on dark, so chroma subsampling leaves them sharp.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    buffer = io.BytesIO()
    image = Image.fromarray(_as_array(picture.permute(1, 2, 0).contiguous()))
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _fit(text: str, width: int, font: object, draw: ImageDraw.ImageDraw) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _as_array(picture: Image.Image | Tensor):  # -> numpy array; numpy only at this boundary
    import numpy as np

    if isinstance(picture, Tensor):
        return picture.numpy()
    return np.array(picture, dtype=np.uint8)
