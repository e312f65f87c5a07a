"""The pictures of a callback run: grid pages, per-sample pictures, class maps, filmstrip
pages and GIF frames, drawn from what they are given.

Images get a column per sample. Signals and volumes get a block per sample, stacked down
the page (:mod:`.signals`, :mod:`.volumes`); their filmstrip is a stack of bands per
signal and the maximum projection per volume, their class maps curves and projections.

:class:`Renderer` holds the picture options only. It is pure: samples (with their class
names and display), maps, captions and headers come in as arguments, uint8 ``(3, H, W)``
pictures (or GIF bytes) come out; it knows no model, no trainer and no logger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from gradcam_callback.options import PictureOptions
from gradcam_callback.render.captions import sample_title
from gradcam_callback.render.class_maps import class_maps_grid
from gradcam_callback.render.encode import encode_gif, encode_image
from gradcam_callback.render.filmstrip import filmstrip, filmstrip_frames
from gradcam_callback.render.grid import annotated_grid, explanation_grid, stack_blocks
from gradcam_callback.render.overlay import resize_tiles, to_display
from gradcam_callback.render.pages import check_picture_size, page_slices, samples_per_page
from gradcam_callback.render.signals import (
    channel_legend,
    signal_block,
    signal_class_maps,
    signal_display,
    signal_filmstrip_block,
    signal_tiles,
    tile_width,
)
from gradcam_callback.render.volumes import AXIS_NAMES, project, volume_block, volume_display

if TYPE_CHECKING:
    from gradcam_callback.samples import Display, FixedSamples

__all__ = ["Renderer", "Rows"]

Rows = Sequence[tuple[str, Tensor]]
"""``(title, maps (N, *S))`` per row of a grid."""


@dataclass(frozen=True)
class Renderer:
    """Draw the callback's pictures with its picture options."""

    options: PictureOptions = field(default_factory=PictureOptions)

    @property
    def axis(self) -> int:
        """The spatial axis volumes are sliced and projected along (``slice_axis``)."""
        return self.options.slice_axis or 0

    def display_images(self, samples: FixedSamples) -> Tensor:
        """The samples ready to show, at input size (pages resize their tiles), by their
        :class:`~gradcam_callback.samples.Display`: images as float RGB ``(N, 3, H, W)``
        in ``[0, 1]``, volumes ``(N, 3, D, H, W)``, signals the lines drawn ``(N, k, T)``."""
        display = samples.display
        if samples.inputs.dim() == 5:
            return volume_display(samples.inputs, display.mean, display.std,
                                  joint=display.joint)
        if samples.inputs.dim() == 3:
            return signal_display(samples.inputs, display.mean, display.std,
                                  self.options.signal_channels)
        return to_display(samples.inputs, display.mean, display.std, joint=display.joint)

    def pages(self, shown: Tensor) -> list[slice]:
        """Slices of the samples, one per page: images as many columns as the format
        allows; signals and volumes (a block each, stacked) ``samples_per_page``."""
        if shown.dim() != 4:
            return page_slices(len(shown), self.options.samples_per_page)
        tile_width = resize_tiles(shown[:1], self.options.max_image_size).shape[-1]
        per_page = samples_per_page(self.options.samples_per_page, tile_width,
                                    self.options.image_format)
        return page_slices(len(shown), per_page)

    def _block(self, shown: Tensor, rows: Rows, caption: list[str], wrong: bool,
               i: int) -> Tensor:
        """Sample ``i``'s block (signals, volumes)."""
        options = self.options
        sample_rows = [(title, maps[i]) for title, maps in rows]
        if shown.dim() == 3:
            if shown.shape[1] > 1 or options.signal_channels is not None:
                channels = options.signal_channels or tuple(range(shown.shape[1]))
                caption = [*caption, channel_legend(channels)]
            return signal_block(shown[i], sample_rows, caption, wrong,
                                width=tile_width(options.max_image_size),
                                colormap=options.colormap, alpha=options.alpha,
                                show_heatmap=options.show_heatmap)
        return volume_block(shown[i], sample_rows, caption, wrong, axis=self.axis,
                            max_image_size=options.max_image_size, colormap=options.colormap,
                            alpha=options.alpha, show_heatmap=options.show_heatmap)

    def grid_pages(self, samples: FixedSamples, rows: Rows, captions: list[list[str]],
                   wrong: list[bool], *, header: str | None = None,
                   limit: int | None = None, outlines: Tensor | None = None) -> list[Tensor]:
        """The explanation grid, a page per ``samples_per_page`` columns (the first
        ``limit`` pages only, if given). Display images are made once for all samples
        (a joint display scale stays joint) and resized page by page.

        Raises:
            ValueError: a page too large for the image format (naming ``max_image_size``).
        """
        shown = self.display_images(samples)
        pages = []
        for page in self.pages(shown)[:limit]:
            if shown.dim() != 4:
                indices = range(len(shown))[page]
                grid = stack_blocks([self._block(shown, rows, captions[i], wrong[i], i)
                                     for i in indices], header=header)
                check_picture_size(grid.shape[1], grid.shape[2], self.options.image_format,
                                   "the grid", f"lower samples_per_page (now "
                                   f"{self.options.samples_per_page})")
                pages.append(grid)
                continue
            grid = self._grid(resize_tiles(shown[page], self.options.max_image_size),
                              [(title, maps[page]) for title, maps in rows], captions[page],
                              wrong[page], header,
                              None if outlines is None else outlines[page])
            check_picture_size(grid.shape[1], grid.shape[2], self.options.image_format,
                               "the grid", f"lower max_image_size (now "
                               f"{self.options.max_image_size})")
            pages.append(grid)
        return pages

    def sample_pictures(self, samples: FixedSamples, rows: Rows, captions: list[list[str]],
                        wrong: list[bool], *, header: str | None = None,
                        outlines: Tensor | None = None) -> Iterator[tuple[int, Tensor]]:
        """One picture per sample (``per_sample_images``), with its dataset index."""
        shown = self.display_images(samples)
        if shown.dim() != 4:
            for i, index in enumerate(samples.indices):
                yield index, stack_blocks([self._block(shown, rows, captions[i], wrong[i], i)],
                                          header=header)
            return
        shown = resize_tiles(shown, self.options.max_image_size)
        for i, index in enumerate(samples.indices):
            yield index, self._grid(shown[i : i + 1],
                                    [(title, maps[i : i + 1]) for title, maps in rows],
                                    captions[i : i + 1], wrong[i : i + 1], header,
                                    None if outlines is None else outlines[i : i + 1])

    def class_maps(self, rows: Sequence[tuple[str, Tensor, Tensor]], mean_image: Tensor,
                   display: Display, class_names: Sequence[str] | None) -> Tensor:
        """The class-maps picture over the mean input, named like the grid's captions:
        signals as one mean curve per class; volumes as maximum projections."""
        if mean_image.dim() == 2:  # signals (C_in, T)
            return signal_class_maps(rows, class_names)
        header = None
        if mean_image.dim() == 4:  # volumes (C_in, D, H, W)
            rows = [(title, project(maps, self.axis), counts) for title, maps, counts in rows]
            mean_image = project(mean_image, self.axis)
            header = f"max projection along {AXIS_NAMES[self.axis]}"
        backdrop = to_display(mean_image.unsqueeze(0), display.mean, display.std,
                              joint=True)[0]
        return class_maps_grid(rows, backdrop, class_names, colormap=self.options.colormap,
                               header=header)

    def filmstrip_pages(self, samples: FixedSamples, maps: Tensor, titles: list[str], *,
                        header: str | None = None, limit: int | None = None,
                        sample_labels: Sequence[str | None] | None = None) -> list[Tensor]:
        """The filmstrip (``maps`` ``(runs, N, *s)``), a page per ``samples_per_page``
        rows (the first ``limit`` only); rows are named ``#<index> <label>`` with
        ``sample_labels`` (the task's words for each sample's label). Signals: a band per
        run under each signal; volumes: the maximum projections."""
        shown = self.display_images(samples)
        labels = sample_labels if sample_labels is not None else [None] * len(samples.indices)
        names = [sample_title(index, label)
                 for index, label in zip(samples.indices, labels, strict=True)]
        if shown.dim() == 3:
            width = tile_width(self.options.max_image_size)
            return [stack_blocks([signal_filmstrip_block(
                        shown[i], maps[:, i], titles, names[i], width=width,
                        colormap=self.options.colormap, alpha=self.options.alpha)
                        for i in range(len(shown))[page]], header=header)
                    for page in self.pages(shown)[:limit]]
        if shown.dim() == 5:
            shown, maps = project(shown, self.axis), project(maps, self.axis)
            header = (f"{header} · " if header else "") + \
                f"max projection along {AXIS_NAMES[self.axis]}"
        return [filmstrip(resize_tiles(shown[page], self.options.max_image_size),
                          maps[:, page], titles, names[page], colormap=self.options.colormap,
                          alpha=self.options.alpha, header=header)
                for page in self.pages(shown)[:limit]]

    def check_filmstrip(self, samples: FixedSamples, maps: Tensor,
                        sample_labels: Sequence[str | None] | None = None) -> None:
        """The filmstrip's first page, at its widest (``filmstrip_max`` runs), encodes.

        Raises:
            ValueError: it would be too large for the format.
        """
        runs = self.options.filmstrip_max
        widest = maps.detach().float().cpu()[None].expand(runs, *maps.shape)
        titles = [f"epoch {i}" for i in range(runs)]
        for page in self.filmstrip_pages(samples, widest, titles, limit=1,
                                         sample_labels=sample_labels):
            check_picture_size(page.shape[1], page.shape[2], self.options.image_format,
                               "the filmstrip", f"lower filmstrip_max (now {runs}) or "
                               "max_image_size")
            encode_image(page, self.options.image_format)

    def gifs(self, samples: FixedSamples, maps: Tensor, titles: list[str]
             ) -> Iterator[tuple[int, bytes]]:
        """An animated GIF per sample (its overlay across the runs), a page at a time
        (signals: the band under the line; volumes: the maximum projection)."""
        shown = self.display_images(samples)
        if shown.dim() == 3:
            width = tile_width(self.options.max_image_size)
            for i, index in enumerate(samples.indices):
                tiles = signal_tiles(shown[i : i + 1].expand(len(titles), -1, -1), maps[:, i],
                                     width=width, height=max(80, width // 3),
                                     colormap=self.options.colormap, alpha=self.options.alpha)
                yield index, encode_gif([annotated_grid([tiles[r : r + 1]], [""], [[title]])
                                         for r, title in enumerate(titles)])
            return
        if shown.dim() == 5:
            shown, maps = project(shown, self.axis), project(maps, self.axis)
        for page in self.pages(shown):  # a page at a time: frames of all samples are big
            frames = filmstrip_frames(resize_tiles(shown[page], self.options.max_image_size),
                                      maps[:, page], titles, colormap=self.options.colormap,
                                      alpha=self.options.alpha)
            for index, sample_frames in zip(samples.indices[page], frames, strict=True):
                yield index, encode_gif(sample_frames)

    def encodes(self, pictures: Sequence[Tensor]) -> None:
        """Encode each picture in the image format once (the check before training)."""
        for picture in pictures:
            encode_image(picture, self.options.image_format)

    def _grid(self, tiles: Tensor, rows: Rows, captions: list[list[str]], wrong: list[bool],
              header: str | None, outlines: Tensor | None = None) -> Tensor:
        options = self.options
        return explanation_grid(tiles, list(rows), captions, wrong, colormap=options.colormap,
                                alpha=options.alpha, show_heatmap=options.show_heatmap,
                                header=header, outlines=outlines)
