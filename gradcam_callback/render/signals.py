"""Pictures of signals ``(N, C, T)``: the signal as a line over its map as a colour band.

A signal's tile is a plot: the chosen channels as lines (white, dark, magenta), the map
behind them as a band of colour along time (hot where the evidence is), and a time axis
in steps. Tiles are wide and low, so a page stacks one *block* per sample (its caption,
then a row per map) instead of a column per sample: the page stays narrow enough to read
where a dashboard shrinks it into a card.

- :func:`signal_block`: one sample's block (the grid, the per-sample picture);
- :func:`signal_filmstrip_block`: one sample's maps across the logged runs, a band per
  run ("attention over time" across epochs);
- :func:`signal_class_maps`: the mean map of each class as one curve per class, on one
  scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from gradcam_callback._checks import check_mean_std
from gradcam_callback.render.captions import class_name
from gradcam_callback.render.colormap import colormap_lut, heatmap
from gradcam_callback.render.grid import (
    BACKGROUND,
    GAP,
    MIN_FONT,
    NO_EVIDENCE,
    TEXT,
    _font,
    annotated_grid,
)

__all__ = ["LINE_COLOURS", "channel_legend", "signal_block", "signal_class_maps",
           "signal_display", "signal_filmstrip_block", "signal_tiles", "tile_width"]

LINE_COLOURS = ((255, 255, 255), (0, 0, 0), (255, 60, 255))
"""The lines of the first, second and third channel drawn (colours the jet band lacks)."""
LINE_NAMES = ("white", "black", "magenta")
PLOT_BACKGROUND = (90, 90, 90)
AXIS = 16
"""Pixels below the plot for the time axis."""
_DEFAULT_CHANNELS = 3


def tile_width(max_image_size: int | None) -> int:
    """A signal tile's width: ``max_image_size`` at least 256 px, 512 when unbounded."""
    return 512 if max_image_size is None else max(256, max_image_size)


def signal_display(inputs: Tensor, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None,
                   channels: Sequence[int] | None = None) -> Tensor:
    """The channels drawn, as lines in ``[0, 1]``: ``(N, k, T)``.

    The normalisation is undone with ``mean``/``std`` (one per channel of the inputs);
    then each drawn channel is min-max scaled over the whole batch, so a sample with a
    larger swing shows a larger swing. ``channels``: which (default: the first three).

    Example::

        >>> x = torch.tensor([[[0.0, 2.0]], [[1.0, 4.0]]])
        >>> signal_display(x)[:, 0].tolist()
        [[0.0, 0.5], [0.25, 1.0]]
    """
    if inputs.dim() != 3:
        raise ValueError(f"signals must be (N, C, T), got shape {tuple(inputs.shape)}")
    values = inputs.detach().float().cpu()
    normalisation = check_mean_std(mean, std, values.shape[1])
    if normalisation is not None:
        values = values * torch.tensor(normalisation[1]).view(1, -1, 1) \
            + torch.tensor(normalisation[0]).view(1, -1, 1)
    chosen = list(channels) if channels is not None else list(
        range(min(_DEFAULT_CHANNELS, values.shape[1])))
    values = values[:, chosen]
    low = values.amin(dim=(0, 2), keepdim=True)
    span = values.amax(dim=(0, 2), keepdim=True) - low
    return ((values - low) / torch.where(span > 0, span, 1.0)).clamp(0, 1)


def signal_tiles(lines: Tensor | None, bands: Tensor | None, *, width: int, height: int,
                 colormap: str = "jet", alpha: float = 0.5, axis: bool = True,
                 steps: int | None = None) -> Tensor:
    """Plots, uint8 ``(N, 3, height, width)``: ``lines`` ``(N, k, T)`` in ``[0, 1]`` over
    ``bands`` ``(N, t)`` in ``[0, 1]`` (resized along time to the plot's width), with a
    time axis in steps below when ``axis``. Either may be ``None`` (a bare band; a plain
    line; both: one empty plot); ``steps`` labels the axis when there are no lines.
    """
    count = len(lines) if lines is not None else (len(bands) if bands is not None else 1)
    length = (int(lines.shape[-1]) if lines is not None
              else int(steps or (bands.shape[-1] if bands is not None else 1)))
    plot_h = height - (AXIS if axis else 0)
    colours = None
    if bands is not None:
        values = bands.detach().float().cpu()[:, None]
        if values.shape[-1] > width:  # a long signal: keep every burst (the max per pixel)
            along = torch.nn.functional.adaptive_max_pool1d(values, width)[:, 0]
        else:
            along = torch.nn.functional.interpolate(values, size=width, mode="linear",
                                                    align_corners=False)[:, 0]
        colours = heatmap(along.clamp(0, 1)[:, None], colormap=colormap)[:, :, 0]  # (N, 3, W)
    font = _font(11)
    tiles = []
    for i in range(count):
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[:] = BACKGROUND
        canvas[:plot_h] = PLOT_BACKGROUND
        if colours is not None:
            dark = torch.tensor(PLOT_BACKGROUND, dtype=torch.float32).view(3, 1) / 255
            band = (alpha * colours[i] + (1 - alpha) * dark).clamp(0, 1)  # (3, W)
            canvas[:plot_h] = (band.T * 255).round().to(torch.uint8).numpy()[None]
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        if lines is not None:
            xs = np.linspace(0, width - 1, length)
            for k in range(lines.shape[1]):
                ys = (1 - lines[i, k].numpy()) * (plot_h - 7) + 3
                draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)),
                          fill=LINE_COLOURS[k % len(LINE_COLOURS)],
                          width=2 if plot_h >= 64 else 1)
        if axis:
            draw.line([(0, plot_h), (width - 1, plot_h)], fill=TEXT)
            for j, step in enumerate(_ticks(length)):
                x = round(step * (width - 1) / max(1, length - 1))
                draw.line([(x, plot_h), (x, plot_h + 3)], fill=TEXT)
                anchor = "la" if j == 0 else ("ra" if step == length - 1 else "ma")
                draw.text((x, plot_h + 3), str(step), fill=TEXT, font=font, anchor=anchor)
        tiles.append(torch.from_numpy(np.array(picture)).permute(2, 0, 1))
    return torch.stack(tiles)


def signal_block(lines: Tensor, rows: Sequence[tuple[str, Tensor]], caption: Sequence[str],
                 wrong: bool, *, width: int, colormap: str = "jet", alpha: float = 0.5,
                 show_heatmap: bool = False) -> Tensor:
    """One sample of the grid: its caption, the plain signal, then per row of maps the
    signal over that map's band (with ``show_heatmap``, the bare band too).

    Args:
        lines: ``(k, T)`` in ``[0, 1]`` (:func:`signal_display`).
        rows: ``(title, map (t,) in [0, 1])`` per row.
        caption: the sample's caption lines.
        wrong: frame the block in red (a wrong prediction).
        width: the tiles' width in pixels.
    """
    height = max(80, width // 3)
    tiles, titles = [signal_tiles(lines[None], None, width=width, height=height)], ["input"]
    notes: dict[tuple[int, int], str] = {}
    for title, band in rows:
        if not bool((band > 0).any()):
            notes[(len(tiles), 0)] = NO_EVIDENCE
        tiles.append(signal_tiles(lines[None], band[None], width=width, height=height,
                                  colormap=colormap, alpha=alpha))
        titles.append(title)
        if show_heatmap:
            tiles.append(signal_tiles(None, band[None], width=width, height=height,
                                      colormap=colormap, alpha=1.0, steps=lines.shape[-1]))
            titles.append("heatmap")
    return annotated_grid(tiles, titles, [list(caption)], [wrong], font_size=MIN_FONT,
                          notes=notes)


def signal_filmstrip_block(lines: Tensor, history: Tensor, titles: Sequence[str], name: str,
                           *, width: int, colormap: str = "jet", alpha: float = 0.5) -> Tensor:
    """One sample's maps across runs: the signal on top, then a band per run (the
    signal's line over it), titled by run (``"epoch 3"``).

    Args:
        lines: ``(k, T)`` in ``[0, 1]``.
        history: ``(R, t)`` maps in ``[0, 1]``, one per run.
        titles: one per run.
        name: the sample's title (``"#3 afib"``).
    """
    band_h = 48
    tiles = [signal_tiles(lines[None], None, width=width, height=band_h)]
    notes: dict[tuple[int, int], str] = {}
    for r in range(history.shape[0]):
        if not bool((history[r] > 0).any()):
            notes[(r + 1, 0)] = NO_EVIDENCE
        tiles.append(signal_tiles(lines[None], history[r : r + 1], width=width,
                                  height=band_h, colormap=colormap, alpha=alpha, axis=False))
    return annotated_grid(tiles, ["input", *titles], [[name]], font_size=MIN_FONT,
                          notes=notes)


def signal_class_maps(rows: Sequence[tuple[str, Tensor, Tensor]],
                      class_names: Sequence[str] | None, *, width: int = 384,
                      max_classes: int = 10) -> Tensor:
    """The class maps of signals: per row (``"by prediction"``, ``"by label"``) one plot
    with the mean map of each class as a curve, every curve on one scale (the highest
    mean map reaches the top), and a legend of names and sample counts.

    Args:
        rows: ``(title, mean maps (C, t), sample counts (C,))`` per row.
        class_names: names of the classes (indices otherwise).
        width: the plots' width in pixels.
        max_classes: at most this many curves, the classes with the most samples.

    Returns:
        uint8 ``(3, height, width)``.
    """
    if not rows:
        raise ValueError("signal_class_maps needs at least one row")
    totals = torch.stack([counts.float() for _, _, counts in rows]).sum(0)
    shown = [c for c in range(len(totals)) if totals[c] > 0] or list(range(len(totals)))
    shown = sorted(sorted(shown, key=lambda c: -float(totals[c]))[:max_classes])
    scale = max(float(maps[shown].max()) for _, maps, _ in rows) or 1.0
    spots = ((torch.arange(len(shown)) % 10) * 25.6 + 12).long()  # tab10's ten colours
    palette = (colormap_lut("tab10")[spots] * 255).round().int().tolist()
    font, line_h = _font(MIN_FONT), MIN_FONT + 4
    plot_h = max(96, width // 3)
    block_h = line_h + plot_h + AXIS + line_h * len(shown) + GAP
    height = GAP + len(rows) * (block_h + GAP)
    picture = Image.new("RGB", (width + 2 * GAP, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    top = GAP
    for title, maps, counts in rows:
        draw.text((GAP, top), title, fill=TEXT, font=font)
        plot_top = top + line_h
        length = int(maps.shape[-1])
        axes = signal_tiles(None, None, width=width, height=plot_h + AXIS,
                            steps=length)[0]  # an empty plot with its axis
        picture.paste(Image.fromarray(axes.permute(1, 2, 0).numpy()), (GAP, plot_top))
        xs = np.linspace(GAP, GAP + width - 1, length)
        for colour, c in zip(palette, shown, strict=False):
            if int(counts[c]) == 0:
                continue
            values = (maps[c].float().clamp(min=0) / scale).numpy()
            ys = plot_top + (1 - values) * (plot_h - 7) + 3
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=tuple(colour),
                      width=2)
        legend_top = plot_top + plot_h + AXIS
        for i, (colour, c) in enumerate(zip(palette, shown, strict=False)):
            y = legend_top + i * line_h + 2
            draw.rectangle((GAP, y + 3, GAP + 14, y + 9), fill=tuple(colour))
            draw.text((GAP + 20, y), f"{class_name(c, class_names)} n={int(counts[c])}",
                      fill=TEXT, font=font)
        top += block_h + GAP
    return torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _ticks(length: int, count: int = 5) -> list[int]:
    """Steps to label on a time axis of ``length`` steps: 0, round steps (1, 2 or 5 times
    a power of ten, the nearest to ``length / count``) and the last step.

    Example::

        >>> _ticks(128), _ticks(5000), _ticks(3)
        ([0, 20, 40, 60, 80, 100, 127], [0, 1000, 2000, 3000, 4000, 4999], [0, 1, 2])
    """
    if length <= 1:
        return [0]
    raw = max(1.0, (length - 1) / count)
    power = 10 ** max(0, len(str(int(raw))) - 1)
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    ticks = list(range(0, length - 1, step))
    if ticks and length - 1 - ticks[-1] <= step / 2 and len(ticks) > 1:
        ticks.pop()  # too close to the last step's label
    return [*ticks, length - 1]


def channel_legend(channels: Sequence[int]) -> str:
    """The caption line naming the lines: ``"lines: 0 white, 6 black, 11 magenta"``."""
    return "lines: " + ", ".join(f"{c} {LINE_NAMES[i % len(LINE_NAMES)]}"
                                 for i, c in enumerate(channels))
