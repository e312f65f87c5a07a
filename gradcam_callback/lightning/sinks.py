"""Where pictures go: one sink per logger kind, chosen from ``trainer.loggers``.

================================  ===================================================
logger                            pictures
================================  ===================================================
``TensorBoardLogger``             image summaries in its event file (:class:`TensorBoardSink`)
``WandbLogger``                   the run's media, at ``trainer/global_step``
                                  (:class:`WandbSink`, through ``WandbLogger.log_image``)
``MLFlowLogger``                  images of the run against the step (:class:`MLflowSink`,
                                  ``MlflowClient.log_image(key=, step=)``)
any logger with ``log_image``     ``logger.log_image(key=, images=[PIL image], step=)``
any other logger with a           files in ``<log_dir>/gradcam`` (:class:`FileSink`)
``log_dir`` (``CSVLogger``)
no logger (``logger=False``)      files in ``<default_root_dir>/gradcam/version_<n>``
``image_dir=`` given              also files in ``<image_dir>/version_<n>``
================================  ===================================================

``version_<n>`` is the next number free when the run writes its first picture, claimed
atomically (``mkdir``), so runs that share a folder never overwrite each other's files.
``DummyLogger`` (``fast_dev_run``) gets nothing. wandb and mlflow are imported by their
loggers only when a picture is sent to them, never by this module.

:class:`PictureSinks` is what the callback holds: the sinks of one run, chosen at its
first picture; it also hands the run's scalars to every logger's ``log_metrics``.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from gradcam_callback.notices import Notices
from gradcam_callback.options import PictureOptions
from gradcam_callback.render.encode import encode_image, to_pil
from gradcam_callback.render.pages import page_tags

__all__ = [
    "FileSink",
    "ImageSink",
    "LogImageSink",
    "MLflowSink",
    "PictureSinks",
    "TensorBoardSink",
    "WandbSink",
    "claim_run_directory",
    "image_sinks",
]


class ImageSink(ABC):
    """Receives finished pictures: uint8 ``(3, H, W)`` tensors on the CPU."""

    @abstractmethod
    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        """Log ``picture`` under ``tag`` at ``step``; ``caption`` is a one-line description."""

    def describe(self) -> str:
        """Where the pictures go, for messages."""
        return type(self).__name__


class TensorBoardSink(ImageSink):
    """Image summaries in a :class:`~lightning.pytorch.loggers.TensorBoardLogger`'s events.

    With torch's ``SummaryWriter`` (what the logger makes) the picture is encoded here, in
    the callback's ``image_format``, and written as one summary; ``add_image`` would always
    re-encode it as a slow default-level PNG. Any other writer gets ``add_image``.
    TensorBoard has no caption field; the picture's own header says when it was taken.
    """

    def __init__(self, logger: TensorBoardLogger, image_format: str = "jpeg") -> None:
        self.logger = logger
        self.image_format = image_format

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        write_image_summary(self.logger.experiment, tag, picture, step, self.image_format)

    def describe(self) -> str:
        return f"TensorBoard ({self.logger.log_dir})"


class WandbSink(ImageSink):
    """The run's media panel of a :class:`~lightning.pytorch.loggers.WandbLogger`.

    Sent through ``WandbLogger.log_image``, which logs the picture together with
    ``trainer/global_step`` (the x-axis Lightning sets for every W&B metric), so the media
    panel's step slider lines up with the scalars. ``caption`` becomes the image's caption.
    """

    def __init__(self, logger: Logger, image_format: str = "jpeg") -> None:
        self.logger = logger
        self.file_type = "png" if image_format == "png" else "jpg"

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        self.logger.log_image(key=tag, images=[to_pil(picture)], step=step,  # type: ignore[attr-defined]
                              caption=[caption], file_type=[self.file_type])

    def describe(self) -> str:
        return "Weights & Biases (the run's media)"


class MLflowSink(ImageSink):
    """Images of an :class:`~lightning.pytorch.loggers.MLFlowLogger`'s run, against the step.

    With mlflow >= 2.12, ``MlflowClient.log_image(run_id, image, key=, step=)``: the run's
    artifacts ``images/<key>+step+<step>+...png`` that MLflow's UI shows with a step slider.
    Older mlflow gets the artifact ``gradcam/<tag>_step<step>.png``. MLflow stores PNG.
    """

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        client = self.logger.experiment  # type: ignore[attr-defined]
        run_id = self.logger.run_id  # type: ignore[attr-defined]
        if "key" in inspect.signature(client.log_image).parameters:
            client.log_image(run_id, to_pil(picture), key=_mlflow_key(tag), step=step)
        else:
            client.log_image(run_id, to_pil(picture),
                             artifact_file=f"gradcam/{_file_stem(tag)}_step{step:07d}.png")

    def describe(self) -> str:
        return "MLflow (the run's images)"


class LogImageSink(ImageSink):
    """Any logger with a ``log_image(key, images, step)`` method, as Lightning's W&B one has.

    The picture goes as a one-element list of PIL images.
    """

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        self.logger.log_image(key=tag, images=[to_pil(picture)], step=step)  # type: ignore[attr-defined]

    def describe(self) -> str:
        return f"{type(self.logger).__name__}.log_image"


class FileSink(ImageSink):
    """Image files ``<tag without gradcam/>_step<step>.<ext>`` in ``directory``.

    With ``run_folder=True`` the files go to a new ``<directory>/version_<n>``, claimed at
    the first write (so a folder that cannot be made fails that write, not the choice of
    sinks, and costs no other sink its pictures).
    """

    def __init__(self, directory: str | Path, image_format: str = "jpeg", *,
                 run_folder: bool = False) -> None:
        self._root = Path(directory)
        self._run_folder = run_folder
        self._claimed: Path | None = None
        self.image_format = image_format

    @property
    def directory(self) -> Path:
        """Where the files go (for a run folder: claimed on first use)."""
        if not self._run_folder:
            return self._root
        if self._claimed is None:
            self._claimed = claim_run_directory(self._root)
        return self._claimed

    def path_for(self, tag: str, step: int) -> Path:
        suffix = "png" if self.image_format == "png" else "jpg"
        return self.directory / f"{_file_stem(tag)}_step{step:07d}.{suffix}"

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path_for(tag, step).write_bytes(encode_image(picture, self.image_format))

    def describe(self) -> str:
        return f"files in {self.directory}"


class PictureSinks:
    """The sinks of the current run (chosen at its first picture), where files go, and the
    loggers' scalars.

    Args:
        options: the picture options (``image_format``, ``image_dir``).
        notices: where "no picture is saved anywhere" is said.
        progress: told ``("writing", where)`` before each write (the failure report names it).
    """

    def __init__(self, options: PictureOptions, notices: Notices,
                 progress: Callable[[str, str], None]) -> None:
        self.options = options
        self._notices = notices
        self._progress = progress
        self._loggers: list[Logger] = []
        self._root: str | Path | None = None
        self._sinks: list[ImageSink] | None = None

    def configure(self, options: PictureOptions) -> None:
        """New picture options: another folder or format takes new sinks from the next
        picture on."""
        if (options.image_dir, options.image_format) != (self.options.image_dir,
                                                         self.options.image_format):
            self._sinks = None
        self.options = options

    def start(self, loggers: list[Logger], default_root_dir: str | Path | None) -> None:
        """A new run (fit, validate, test) with these loggers: the sinks are chosen again
        at its first picture."""
        self._loggers, self._root, self._sinks = list(loggers), default_root_dir, None

    def log(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        """``picture`` to every sink at ``step``."""
        for sink in self._current():
            self._progress("writing", sink.describe())
            sink.log_image(tag, picture, step, caption)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Every logger's ``log_metrics`` at ``step``."""
        for logger in self._loggers:
            logger.log_metrics(dict(scalars), step=step)

    def log_pages(self, tag: str, pages: list[Tensor], step: int, caption: str = "") -> None:
        """Each page: ``tag`` for one, ``tag/page_<k>`` for several."""
        for page_tag, page in zip(page_tags(tag, len(pages)), pages, strict=True):
            self.log(page_tag, page, step, caption)

    def file_directory(self) -> Path | None:
        """Where files of this run go (GIFs): ``image_dir``'s run folder when given, else
        the run's own folder, else a logger's ``<log_dir>/gradcam``; ``None`` if nowhere."""
        files = [sink.directory for sink in self._current() if isinstance(sink, FileSink)]
        if files:
            return files[-1]
        for logger in self._loggers:
            directory = getattr(logger, "log_dir", None)
            if directory and not _is_dummy(logger):
                return Path(directory) / "gradcam"
        return None

    def _current(self) -> list[ImageSink]:
        if self._sinks is None:
            self._sinks = image_sinks(self._loggers, self.options.image_dir,
                                      self.options.image_format, self._root)
            if not self._sinks:
                self._notices.warn_once(
                    "no_sinks", "GradCAMCallback: no logger takes pictures and no image_dir "
                    "is set; pictures are not saved. Pass image_dir= to write them as files.")
        return self._sinks


def image_sinks(loggers: list[Logger], image_dir: str | Path | None, image_format: str,
                default_root_dir: str | Path | None = None) -> list[ImageSink]:
    """The sinks for a trainer's loggers (one per logger), plus files in ``image_dir``.

    Call it once per run, when the first picture is ready: a file folder of its own
    (``version_<n>``) is claimed then, for ``image_dir`` and for the no-logger case.

    Args:
        loggers: ``trainer.loggers``.
        image_dir: also write every picture into ``<image_dir>/version_<n>``.
        image_format: ``"jpeg"`` or ``"png"``, for event files and image files.
        default_root_dir: ``trainer.default_root_dir``: with no logger at all (and no
            ``image_dir``), pictures go to ``<default_root_dir>/gradcam/version_<n>``.

    Returns:
        The sinks; a logger that can take no pictures (one with neither ``log_image`` nor
        a ``log_dir``) is named in a warning.
    """
    sinks: list[ImageSink] = []
    for logger in loggers:
        sink = sink_for(logger, image_format)
        if sink is not None:
            sinks.append(sink)
        elif not _is_dummy(logger):
            rank_zero_warn(f"GradCAMCallback: {type(logger).__name__} takes no pictures (it has "
                           "neither log_image nor a log_dir); pass image_dir= to also write "
                           "them as files.")
    if image_dir is not None:
        sinks.append(FileSink(image_dir, image_format, run_folder=True))
    elif not loggers and default_root_dir is not None:
        directory = Path(default_root_dir) / "gradcam"
        rank_zero_info(f"GradCAMCallback: no logger; pictures are written to "
                       f"{directory}/version_<n>, a new folder per run")
        sinks.append(FileSink(directory, image_format, run_folder=True))
    return sinks


def sink_for(logger: Logger, image_format: str = "jpeg") -> ImageSink | None:
    """The sink for one logger, or ``None`` when it can take no pictures."""
    if _is_dummy(logger):
        return None
    if isinstance(logger, TensorBoardLogger):
        return TensorBoardSink(logger, image_format)
    if isinstance(logger, WandbLogger) or type(logger).__name__ == "WandbLogger":
        return WandbSink(logger, image_format)
    if isinstance(logger, MLFlowLogger) or type(logger).__name__ == "MLFlowLogger":
        return MLflowSink(logger)
    if callable(getattr(logger, "log_image", None)):
        return LogImageSink(logger)
    directory = getattr(logger, "log_dir", None)
    if directory:
        return FileSink(Path(directory) / "gradcam", image_format)
    return None


def claim_run_directory(parent: str | Path) -> Path:
    """Create and return ``<parent>/version_<n>`` for the lowest ``n`` not yet taken.

    ``mkdir`` without ``exist_ok`` is atomic, so two runs starting together get two folders.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.removeprefix("version_")) for p in parent.glob("version_*")
             if p.name.removeprefix("version_").isdigit()]
    number = max(taken, default=-1) + 1
    while True:
        candidate = parent / f"version_{number}"
        try:
            candidate.mkdir()
        except FileExistsError:
            number += 1
            continue
        return candidate


def _file_stem(tag: str) -> str:
    return re.sub(r"[^\w.-]+", "_", tag.removeprefix("gradcam/"))


def _mlflow_key(tag: str) -> str:
    """``tag`` with the characters MLflow's image keys refuse replaced by ``_``."""
    return re.sub(r"[^a-zA-Z0-9_\-./ ]", "_", tag)


def _is_dummy(logger: Logger) -> bool:
    return type(logger).__name__ == "DummyLogger"


def write_image_summary(writer: Any, tag: str, picture: Tensor, step: int,
                        image_format: str = "png") -> None:
    """Write uint8 ``(3, H, W)`` to a TensorBoard writer as one image summary.

    torch's ``SummaryWriter`` gets the picture encoded in ``image_format`` through its file
    writer (the one private call, isolated here); any other writer gets ``add_image``.
    """
    from torch.utils.tensorboard import SummaryWriter

    if not isinstance(writer, SummaryWriter):
        writer.add_image(tag, picture, global_step=step, dataformats="CHW")
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=picture.shape[1], width=picture.shape[2], colorspace=3,
                          encoded_image_string=encode_image(picture, image_format))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                          step)
