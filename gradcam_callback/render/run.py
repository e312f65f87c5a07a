"""The pictures of a callback run: grid pages, per-sample pictures, class maps, filmstrip
pages and GIF frames, drawn from what they are given.

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
from gradcam_callback.render.grid import explanation_grid
from gradcam_callback.render.overlay import resize_tiles, to_display
from gradcam_callback.render.pages import check_picture_size, page_slices, samples_per_page

if TYPE_CHECKING:
    from gradcam_callback.samples import Display, FixedSamples

__all__ = ["Renderer", "Rows"]

Rows = Sequence[tuple[str, Tensor]]
"""``(title, maps (N, H, W))`` per row of a grid."""


@dataclass(frozen=True)
class Renderer:
    """Draw the callback's pictures with its picture options."""

    options: PictureOptions = field(default_factory=PictureOptions)

    def display_images(self, samples: FixedSamples) -> Tensor:
        """The samples as float RGB in ``[0, 1]`` at input size (pages resize their tiles),
        shown by their :class:`~gradcam_callback.samples.Display`."""
        display = samples.display
        return to_display(samples.inputs, display.mean, display.std, joint=display.joint)

    def pages(self, shown: Tensor) -> list[slice]:
        """Slices of the samples, one per page, each as wide as the format allows."""
        tile_width = resize_tiles(shown[:1], self.options.max_image_size).shape[-1]
        per_page = samples_per_page(self.options.samples_per_page, tile_width,
                                    self.options.image_format)
        return page_slices(len(shown), per_page)

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
        shown = resize_tiles(self.display_images(samples), self.options.max_image_size)
        for i, index in enumerate(samples.indices):
            yield index, self._grid(shown[i : i + 1],
                                    [(title, maps[i : i + 1]) for title, maps in rows],
                                    captions[i : i + 1], wrong[i : i + 1], header,
                                    None if outlines is None else outlines[i : i + 1])

    def class_maps(self, rows: Sequence[tuple[str, Tensor, Tensor]], mean_image: Tensor,
                   display: Display, class_names: Sequence[str] | None) -> Tensor:
        """The class-maps picture over the mean input, named like the grid's captions."""
        backdrop = to_display(mean_image.unsqueeze(0), display.mean, display.std,
                              joint=True)[0]
        return class_maps_grid(rows, backdrop, class_names, colormap=self.options.colormap)

    def filmstrip_pages(self, samples: FixedSamples, maps: Tensor, titles: list[str], *,
                        header: str | None = None, limit: int | None = None,
                        sample_labels: Sequence[str | None] | None = None) -> list[Tensor]:
        """The filmstrip (``maps`` ``(runs, N, h, w)``), a page per ``samples_per_page``
        rows (the first ``limit`` only); rows are named ``#<index> <label>`` with
        ``sample_labels`` (the task's words for each sample's label)."""
        shown = self.display_images(samples)
        labels = sample_labels if sample_labels is not None else [None] * len(samples.indices)
        names = [sample_title(index, label)
                 for index, label in zip(samples.indices, labels, strict=True)]
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
        widest = maps.detach().float().cpu()[None].expand(runs, -1, -1, -1)
        titles = [f"epoch {i}" for i in range(runs)]
        for page in self.filmstrip_pages(samples, widest, titles, limit=1,
                                         sample_labels=sample_labels):
            check_picture_size(page.shape[1], page.shape[2], self.options.image_format,
                               "the filmstrip", f"lower filmstrip_max (now {runs}) or "
                               "max_image_size")
            encode_image(page, self.options.image_format)

    def gifs(self, samples: FixedSamples, maps: Tensor, titles: list[str]
             ) -> Iterator[tuple[int, bytes]]:
        """An animated GIF per sample (its overlay across the runs), a page at a time."""
        shown = self.display_images(samples)
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
