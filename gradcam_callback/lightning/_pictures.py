"""The callback's pictures: grid pages, per-sample pictures, class maps, the filmstrip
and GIFs, and sending them to the sinks.

A part of :class:`~gradcam_callback.lightning.callback.GradCAMCallback`, split out by
concern; the drawing lives in :mod:`gradcam_callback.render`, the writing in :mod:`.sinks`.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from torch import Tensor

from gradcam_callback.lightning.display import Display
from gradcam_callback.lightning.history import evenly_spaced
from gradcam_callback.lightning.samples import (
    FixedSamples,
)
from gradcam_callback.lightning.sinks import FileSink, image_sinks
from gradcam_callback.lightning.statistics import (
    StatisticsResult,
)
from gradcam_callback.render import (
    encode_gif,
    explanation_grid,
    filmstrip,
    filmstrip_frames,
    resize_tiles,
    sample_title,
    to_display,
)
from gradcam_callback.render.class_maps import class_maps_grid
from gradcam_callback.render.pages import (
    check_picture_size,
    page_slices,
    page_tags,
    samples_per_page,
)


class PicturesMixin:
    """Render the pictures of a run and send them to the sinks."""

    def _grid_pages(self, samples: FixedSamples, rows: list[tuple[str, Tensor]],
                    captions: list[list[str]], wrong: list[bool],
                    limit: int | None = None, header: str | None = None) -> list[Tensor]:
        """The explanation grid, a page per ``samples_per_page`` columns (the first
        ``limit`` pages only, if given). Display images are made once for all samples
        (a joint display scale stays joint) and resized page by page."""
        shown = self._display_images(samples)
        pages = []
        for page in self._pages(shown)[:limit]:
            grid = explanation_grid(
                resize_tiles(shown[page], self.max_image_size),
                [(title, cams[page]) for title, cams in rows], captions[page], wrong[page],
                colormap=self.colormap, alpha=self.alpha, show_heatmap=self.show_heatmap,
                header=header)
            check_picture_size(grid.shape[1], grid.shape[2], self.image_format, "the grid",
                               f"lower max_image_size (now {self.max_image_size})")
            pages.append(grid)
        return pages

    def _pages(self, shown: Tensor) -> list[slice]:
        """Slices of the samples, one per page, each as wide as the format allows."""
        tile_width = resize_tiles(shown[:1], self.max_image_size).shape[-1]
        per_page = samples_per_page(self.samples_per_page, tile_width, self.image_format)
        return page_slices(len(shown), per_page)

    def _log_pages(self, trainer: Trainer, tag: str, pages: list[Tensor],
                   caption: str = "") -> None:
        """Log each page: ``tag`` for one, ``tag/page_<k>`` for several."""
        for page_tag, page in zip(page_tags(tag, len(pages)), pages, strict=True):
            self._log_image(trainer, page_tag, page, caption)

    def _log_samples(self, trainer: Trainer, tag: str, samples: FixedSamples,
                     rows: list[tuple[str, Tensor]], captions: list[list[str]],
                     wrong: list[bool], header: str) -> None:
        """One picture per sample, ``tag/sample_<dataset index>`` (``per_sample_images``)."""
        shown = resize_tiles(self._display_images(samples), self.max_image_size)
        for i, index in enumerate(samples.indices):
            picture = explanation_grid(
                shown[i : i + 1], [(title, cams[i : i + 1]) for title, cams in rows],
                captions[i : i + 1], wrong[i : i + 1], colormap=self.colormap,
                alpha=self.alpha, show_heatmap=self.show_heatmap, header=header)
            self._log_image(trainer, f"{tag}/sample_{index}", picture, header)

    def _display_images(self, samples: FixedSamples) -> Tensor:
        """The samples as float RGB in ``[0, 1]`` at input size (pages resize their tiles),
        undoing the dataset's normalisation when it is known, else scaled jointly."""
        display = self._display or Display(self.mean, self.std, joint=self.mean is None,
                                           source="")
        return to_display(samples.inputs, display.mean, display.std, joint=display.joint)

    def _log_class_maps(self, trainer: Trainer, prefix: str,
                        statistics: StatisticsResult) -> None:
        rows = [("by prediction", statistics.by_prediction, statistics.prediction_counts)]
        if statistics.by_label is not None and statistics.label_counts is not None:
            rows.append(("by label", statistics.by_label, statistics.label_counts))
        display = self._display or Display(self.mean, self.std, joint=True, source="")
        backdrop = to_display(statistics.mean_image.unsqueeze(0), display.mean, display.std,
                              joint=True)[0]
        self.last_class_maps = class_maps_grid(rows, backdrop, self.class_names,
                                               colormap=self.colormap)
        self._log_image(trainer, prefix + "class_maps", self.last_class_maps)

    def log_filmstrip(self, trainer: Trainer) -> Tensor | None:
        """Log the filmstrip of the runs so far; called at the end of fit.

        One image ``gradcam/<layer>/filmstrip``: a row per fixed sample, a column per logged
        validation run (evenly subsampled to at most ``filmstrip_max``), the epoch above
        each; more than ``samples_per_page`` samples are split into pages
        ``.../filmstrip/page_<k>``. With ``save_gif``, also an animated GIF per sample.
        Rank zero only.

        Returns:
            The filmstrip (its first page) as uint8 ``(3, H, W)``, or ``None`` on other
            ranks or before any run.
        """
        if not trainer.is_global_zero or not len(self._history):
            return None
        self._progress("reading the samples")
        samples = self._fixed_samples(trainer, "validate")
        self._progress("rendering")
        self._history.fit_to(len(samples.indices), tuple(samples.inputs.shape[-2:]))
        if not len(self._history):
            return None
        runs = evenly_spaced(len(self._history), self.filmstrip_max)
        maps = self._history.maps[runs]  # type: ignore[index]
        titles = [f"epoch {self._history.epochs[r]}" for r in runs]
        header = (f"filmstrip · epochs {self._history.epochs[0]}-{self._history.epochs[-1]}"
                  f" · step {trainer.global_step}")
        pages = self._filmstrip_pages(samples, maps, titles, header=header)
        self.last_filmstrip = pages[0]
        self._log_pages(trainer, f"gradcam/{self._layer_name}/filmstrip", pages, header)
        if self.save_gif:
            self._save_gifs(trainer, samples, maps, titles)
        return pages[0]

    def _filmstrip_pages(self, samples: FixedSamples, maps: Tensor, titles: list[str],
                         limit: int | None = None, header: str | None = None) -> list[Tensor]:
        """The filmstrip, a page per ``samples_per_page`` rows (the first ``limit`` only)."""
        shown = self._display_images(samples)
        rows = [sample_title(index, None if samples.labels is None else int(samples.labels[i]),
                             self._class_names) for i, index in enumerate(samples.indices)]
        return [filmstrip(resize_tiles(shown[page], self.max_image_size), maps[:, page],
                          titles, rows[page], colormap=self.colormap, alpha=self.alpha,
                          header=header)
                for page in self._pages(shown)[:limit]]

    def _save_gifs(self, trainer: Trainer, samples: FixedSamples, maps: Tensor,
                   titles: list[str]) -> None:
        directory = self._file_directory(trainer)
        if directory is None:
            self._warn_once("gif_nowhere", "GradCAMCallback(save_gif=True): no image_dir and "
                            "no logger with a directory; no GIFs written.")
            return
        self._progress("writing", str(directory))
        directory.mkdir(parents=True, exist_ok=True)
        shown = self._display_images(samples)
        for page in self._pages(shown):  # a page at a time: frames of all samples are big
            frames = filmstrip_frames(resize_tiles(shown[page], self.max_image_size),
                                      maps[:, page], titles, colormap=self.colormap,
                                      alpha=self.alpha)
            for index, sample_frames in zip(samples.indices[page], frames, strict=True):
                path = directory / f"{self._layer_name}_sample{index}.gif"
                path.write_bytes(encode_gif(sample_frames))

    def _file_directory(self, trainer: Trainer) -> Path | None:
        files = [sink.directory for sink in self._sinks or [] if isinstance(sink, FileSink)]
        if files:
            return files[-1]  # image_dir's run folder when given, else the run's own
        if self.image_dir is not None:
            return Path(self.image_dir)
        for logger in trainer.loggers:
            directory = getattr(logger, "log_dir", None)
            if directory and type(logger).__name__ != "DummyLogger":
                return Path(directory) / "gradcam"
        return None

    def _log_image(self, trainer: Trainer, tag: str, picture: Tensor, caption: str = "") -> None:
        if self._sinks is None:
            self._sinks = image_sinks(trainer.loggers, self.image_dir, self.image_format,
                                      trainer.default_root_dir)
            if not self._sinks:
                self._warn_once("no_sinks", "GradCAMCallback: no logger takes pictures and no "
                                "image_dir is set; pictures are not saved. Pass image_dir= to "
                                "write them as files.")
        for sink in self._sinks:
            self._progress("writing", sink.describe())
            sink.log_image(tag, picture, trainer.global_step, caption)
