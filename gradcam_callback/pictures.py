"""The pictures of the callback's runs: drawn by the renderer, sent to the run's sinks.

:class:`Pictures` turns an explanation into the grid (or one picture per sample), the
class maps and, at the end of fit, the filmstrip (and GIFs), and sends each to the
sinks of the run. It keeps the last of each (``callback.last_grid``, ...). The sinks come
in from the Lightning side (:class:`~gradcam_callback.lightning.sinks.PictureSinks`);
nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torch import Tensor

from gradcam_callback.explainer import Explained
from gradcam_callback.history import History, evenly_spaced
from gradcam_callback.notices import Notices
from gradcam_callback.render.run import Renderer
from gradcam_callback.samples import FixedSamples
from gradcam_callback.statistics import StatisticsResult
from gradcam_callback.tasks import Task

__all__ = ["Grid", "Pictures", "Sinks"]


class Sinks(Protocol):
    """Where a run's pictures and scalars go
    (:class:`~gradcam_callback.lightning.sinks.PictureSinks`)."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...

    def log(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None: ...

    def log_pages(self, tag: str, pages: list[Tensor], step: int,
                  caption: str = "") -> None: ...

    def file_directory(self) -> Path | None: ...


@dataclass(frozen=True)
class Grid:
    """A run's explanation grid, drawn: its pages, with what they were drawn from."""

    samples: FixedSamples
    explained: Explained
    captions: list[list[str]]
    wrong: list[bool]
    header: str | None
    pages: list[Tensor]


@dataclass
class Pictures:
    """Draw and send the pictures of each run.

    Attributes:
        renderer: draws them (the picture options).
        sinks: where they go.
        notices: where "nowhere to write GIFs" is said.
        progress: told what is being done (a failure report names it).
        last_grid, last_pages, last_class_maps, last_filmstrip: the last of each.
    """

    renderer: Renderer
    sinks: Sinks
    notices: Notices = field(default_factory=Notices)
    progress: Callable[[str, str], None] = lambda step, where: None
    last_grid: Tensor | None = None
    last_pages: list[Tensor] = field(default_factory=list)
    last_class_maps: Tensor | None = None
    last_filmstrip: Tensor | None = None

    def draw_grid(self, samples: FixedSamples, explained: Explained, *,
                  header: str | None = None, limit: int | None = None) -> Grid:
        """The grid's pages (the first ``limit``), captioned with the predictions as the
        task reads them (segmentation: the predicted region outlined)."""
        self.progress("rendering", "")
        self.renderer.options.check_kind(samples.kind, tuple(samples.inputs.shape))
        captions, wrong = explained.task.captions(explained.logits, explained.labels,
                                                  samples.class_names, explained.explained)
        pages = self.renderer.grid_pages(samples, explained.rows, captions, wrong,
                                         header=header, limit=limit,
                                         outlines=explained.outlines)
        return Grid(samples, explained, captions, wrong, header, pages)

    def check(self, samples: FixedSamples, explained: Explained, *, filmstrip: bool) -> None:
        """The check before training: the first page (and the widest filmstrip) encode."""
        self.renderer.encodes(self.draw_grid(samples, explained, limit=1).pages)
        if filmstrip:
            self.renderer.check_filmstrip(samples, explained.maps, explained.task.sample_labels(
                samples.labels, len(samples.indices), samples.class_names))

    def keep(self, grid: Grid) -> None:
        """Keep ``grid`` as the last one (before it is sent: a failed write keeps it)."""
        self.last_pages, self.last_grid = grid.pages, grid.pages[0]

    def send_grid(self, grid: Grid, tag: str, step: int) -> None:
        """The grid's pages under ``tag`` (``tag/page_<k>`` for several), or with
        ``per_sample_images`` one picture per sample under ``tag/sample_<index>``."""
        header = grid.header or ""
        if not self.renderer.options.per_sample_images:
            self.sinks.log_pages(tag, grid.pages, step, header)
            return
        for index, picture in self.renderer.sample_pictures(
                grid.samples, grid.explained.rows, grid.captions, grid.wrong,
                header=grid.header, outlines=grid.explained.outlines):
            self.sinks.log(f"{tag}/sample_{index}", picture, step, header)

    def send_class_maps(self, statistics: StatisticsResult, samples: FixedSamples, tag: str,
                        step: int, task: Task) -> None:
        """The mean map per class (side, label) by prediction, and by label when there
        are labels; named by the task (a binary model's sides)."""
        rows = [("by prediction", statistics.by_prediction, statistics.prediction_counts)]
        if statistics.by_label is not None and statistics.label_counts is not None:
            rows.append(("by label", statistics.by_label, statistics.label_counts))
        names = task.names(samples.class_names)
        self.last_class_maps = self.renderer.class_maps(rows, statistics.mean_image,
                                                        samples.display, names)
        self.sinks.log(tag, self.last_class_maps, step)

    def send_filmstrip(self, samples: FixedSamples, history: History, *, tag: str, step: int,
                       by_step: bool, gif_prefix: str,
                       sample_labels: list[str | None] | None = None) -> Tensor | None:
        """The filmstrip of ``history`` (at most ``filmstrip_max`` runs, evenly spread),
        titled by epoch (or by step); with ``save_gif``, a GIF per sample too."""
        self.progress("rendering", "")
        history.fit_to(len(samples.indices), samples.size)
        stacked = history.maps
        if stacked is None:
            return None
        runs = evenly_spaced(len(history), self.renderer.options.filmstrip_max)
        maps = stacked[runs]
        titles = [f"step {history.steps[r]}" if by_step else f"epoch {history.epochs[r]}"
                  for r in runs]
        header = (f"filmstrip · epochs {history.epochs[0]}-{history.epochs[-1]}"
                  f" · step {step}")
        pages = self.renderer.filmstrip_pages(samples, maps, titles, header=header,
                                              sample_labels=sample_labels)
        self.last_filmstrip = pages[0]
        self.sinks.log_pages(tag, pages, step, header)
        if self.renderer.options.save_gif:
            self._save_gifs(samples, maps, titles, gif_prefix)
        return pages[0]

    def _save_gifs(self, samples: FixedSamples, maps: Tensor, titles: list[str],
                   prefix: str) -> None:
        directory = self.sinks.file_directory()
        if directory is None:
            self.notices.warn_once("gif_nowhere", "GradCAMCallback(save_gif=True): no "
                                   "image_dir and no logger with a directory; no GIFs written.")
            return
        self.progress("writing", str(directory))
        directory.mkdir(parents=True, exist_ok=True)
        for index, gif in self.renderer.gifs(samples, maps, titles):
            (directory / f"{prefix}_sample{index}.gif").write_bytes(gif)
