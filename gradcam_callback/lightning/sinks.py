"""Where pictures go: one sink per logger kind, chosen from ``trainer.loggers``.

- :class:`TensorBoardSink`: image summaries in the logger's event file.
- :class:`FileSink`: image files in a directory of the run's own (a CSV logger's run
  directory, or the ``image_dir`` the user gave).

Scalars are not sinks' business: they go to every logger through ``log_metrics``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from gradcam_callback.render import encode_image

__all__ = ["FileSink", "ImageSink", "TensorBoardSink", "image_sinks"]


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
    """

    def __init__(self, logger: TensorBoardLogger, image_format: str = "jpeg") -> None:
        self.logger = logger
        self.image_format = image_format

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        write_image_summary(self.logger.experiment, tag, picture, step, self.image_format)

    def describe(self) -> str:
        return f"TensorBoard ({self.logger.log_dir})"


class FileSink(ImageSink):
    """Image files ``<tag without gradcam/>_step<step>.<ext>`` in ``directory``."""

    def __init__(self, directory: str | Path, image_format: str = "jpeg") -> None:
        self.directory = Path(directory)
        self.image_format = image_format

    def path_for(self, tag: str, step: int) -> Path:
        name = re.sub(r"[^\w.-]+", "_", tag.removeprefix("gradcam/"))
        suffix = "png" if self.image_format == "png" else "jpg"
        return self.directory / f"{name}_step{step:07d}.{suffix}"

    def log_image(self, tag: str, picture: Tensor, step: int, caption: str = "") -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path_for(tag, step).write_bytes(encode_image(picture, self.image_format))

    def describe(self) -> str:
        return f"files in {self.directory}"


def image_sinks(loggers: list[Logger], image_dir: str | Path | None,
                image_format: str) -> list[ImageSink]:
    """The sinks for a trainer's loggers, plus a :class:`FileSink` in ``image_dir`` if given.

    A TensorBoard logger gets its event file; any other logger with a run directory gets
    files in ``<its log_dir>/gradcam``. Loggers without a place of their own (Lightning's
    ``DummyLogger`` under ``fast_dev_run``) get nothing: no files are written anywhere the
    user did not choose.
    """
    sinks: list[ImageSink] = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            sinks.append(TensorBoardSink(logger, image_format))
        elif _run_directory(logger) is not None:
            sinks.append(FileSink(Path(_run_directory(logger)) / "gradcam", image_format))
    if image_dir is not None:
        sinks.append(FileSink(image_dir, image_format))
    return sinks


def _run_directory(logger: Logger) -> str | None:
    if type(logger).__name__ == "DummyLogger":
        return None
    directory = getattr(logger, "log_dir", None)
    return str(directory) if directory else None


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
