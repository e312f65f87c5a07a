"""
Grad-CAM Callback
=================

Watch where the model looks while it trains: at the end of validation runs, compute class
activation maps on a fixed set of validation images and log an annotated grid and
attention scalars to the trainer's loggers.

This module is orchestration only: *when* to run and *what* to call. The samples come from
:mod:`.samples`, the maps from :mod:`gradcam_callback.engine`, the scalars from
:mod:`gradcam_callback.metrics`, the pictures from :mod:`gradcam_callback.render`, the
history from :mod:`.history`, and the pictures leave through :mod:`.sinks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradcam_callback import _checks
from gradcam_callback.engine import explain_batch, get_method, resolve_layer
from gradcam_callback.engine.scopes import preserved_rng_state
from gradcam_callback.engine.transforms import check_reading
from gradcam_callback.lightning.history import History, evenly_spaced
from gradcam_callback.lightning.samples import FixedSamples, SampleReader
from gradcam_callback.lightning.sinks import FileSink, ImageSink, image_sinks
from gradcam_callback.metrics import attention_scalars
from gradcam_callback.render import (
    IMAGE_FORMATS,
    colormap_lut,
    encode_gif,
    explanation_grid,
    filmstrip,
    filmstrip_frames,
    prediction_captions,
    resize_tiles,
    run_header,
    sample_title,
    to_display,
)

__all__ = ["GradCAMCallback"]

_TARGET_WORDS = ("predicted", "label", "both")
_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


class GradCAMCallback(Callback):
    r"""Log Grad-CAM overlays of fixed validation images, and attention scalars, during training.

    At the end of every ``every_n_epochs``-th epoch's validation runs (never during the
    sanity check), rank zero takes the first ``num_samples`` samples of the validation
    dataset (the same ones every time, read by index through the dataloader's
    ``collate_fn``), computes CAMs at ``target_layer``, and logs one image
    ``gradcam/<layer>/overlay`` at ``trainer.global_step``: one column per sample, rows
    "input" and the CAM overlay, each column captioned with the true label, the
    predicted label and its probability, and framed in red when the prediction is wrong.

    Scalars go to every logger at the same step, under ``gradcam/<layer>/``:
    ``border_energy`` (the share of CAM mass in the outer 10% frame: borders, corner
    patches, watermarks), ``energy_in_mask/<name>`` and ``pointing_game/<name>`` for each
    region mask the batch provides, and from the second run on ``drift`` (against the
    previous run) and ``drift_from_start`` (against the first); formulas in
    :mod:`gradcam_callback.metrics`. At the end of fit, ``gradcam/<layer>/filmstrip`` shows
    every sample's map across the runs in one picture.

    Every picture carries its epoch and step in a header line. Pictures go to every
    logger: a TensorBoard logger's event file, a W&B run's media (at
    ``trainer/global_step``), an MLflow run's images (against the step), any other logger's
    ``log_image``; a logger with only a run directory (CSV) gets image files in
    ``<log_dir>/gradcam``; with no logger, files go to
    ``<default_root_dir>/gradcam/version_<n>``; and, when ``image_dir`` is given, files go to
    ``<image_dir>/version_<n>`` too (a new ``n`` per run, so runs never overwrite each
    other). Scalars go to every logger's ``log_metrics`` with ``epoch`` next to them.

    The last grid, filmstrip and scalars stay available as ``last_grid`` and
    ``last_filmstrip`` (uint8 ``(3, H, W)``) and ``last_metrics``; the fixed samples as
    :attr:`samples`, the maps of every run as :attr:`history`.

    Explaining the model has no effect on training: the model runs in eval mode for the
    computation only, no ``.grad`` is touched, and the global RNG states are restored, so
    a seeded, deterministic run trains bit-identically with and without the callback.

    Args:
        target_layer: dotted name of the layer to explain, as ``model.named_modules()``
            spells it (``"backbone.layer4"``); ``None`` picks one (a CNN's last spatial
            block, a ViT's last pre-attention norm, a Swin's last stage norm), logged once
            with its reading and used in the tags.
        num_samples: how many validation samples to show (the first ones by index).
        every_n_epochs: log on every n-th epoch.
        method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"``, ``"eigencam"``, or a name added with ``register_method``.
        target: the score to explain: ``"predicted"`` (each sample's predicted class),
            ``"label"`` (its ground-truth class from the batch), ``"both"`` (two rows:
            predicted and ground truth, the view that explains a wrong answer), a class
            index, or a callable ``logits -> (N,)`` scores.
        sample_indices: explicit dataset indices to show instead of the first
            ``num_samples``.
        dataloader_idx: which validation (and test) dataloader to take samples from.
        input_key: the images' key when the dataset yields dicts.
        label_key: the labels' key when the dataset yields dicts (missing = no labels).
        batch_to_input: a callable ``batch -> inputs`` or ``batch -> (inputs, labels)``
            for other batch formats (an import path in YAML).
        class_names: names shown instead of class indices.
        mean: per-channel mean used to normalise the inputs, to show them as they were.
        std: per-channel std used to normalise the inputs. Without ``mean``/``std`` each
            image is min-max scaled for display.
        colormap: any matplotlib colormap name.
        alpha: heatmap opacity in the overlay, in ``[0, 1]``.
        show_heatmap: add a row with the bare heatmaps.
        max_image_size: downscale tiles whose longer side exceeds this (pixels);
            ``None`` keeps the input size. Small inputs are upscaled to stay legible.
        reshape_transform: how to read the layer's output as maps: ``"auto"`` (channels-
            first, channels-last or ViT tokens with any number of class/register tokens,
            recognised from the shape and the input size), ``"nchw"``, ``"nhwc"``,
            ``"tokens"`` (alias ``"vit"``), ``"tokens:<n>"`` for ``n`` prefix tokens, or a
            callable ``output -> (N, C, h, w)``.
        output_transform: picks the logits out of a model output that is not a tensor.
        mask_keys: keys of dict batches holding region masks ``(N, H, W)`` to measure CAM
            energy in; ``None`` takes every key ending in ``"_mask"``.
        mask_fn: a callable ``batch -> {name: (N, H, W) bool mask}``, for other formats.
        filmstrip_max: at most this many runs (columns) in the filmstrip, evenly spread.
        save_gif: also write an animated GIF of each sample's maps over the runs (into
            ``image_dir``'s run folder, or the run's own image folder).
        image_format: how grids are encoded in the event files and image files:
            ``"jpeg"`` (quality 90) or ``"png"`` (lossless, several times larger).
            Size matters twice: on disk, and because TensorBoard's writer computes a
            pure-Python checksum of every event (about 0.2 s of CPU per MB).
        image_dir: also write every picture as a file, into a new folder
            ``<image_dir>/version_<n>`` per run.
        per_sample_images: log one picture per sample, ``gradcam/<layer>/overlay/sample_<i>``
            (``i`` its dataset index), instead of one grid: its captions stay legible in
            TensorBoard's default card size (about 320 px), where a grid of many columns is
            shrunk until only "Show actual image size" makes its text readable.

    Raises:
        TypeError: an argument of the wrong type (the message names it and says what is valid).
        ValueError: an argument out of its valid range; at setup, an unknown
            ``target_layer`` (with the closest names) or a sharded strategy (FSDP,
            DeepSpeed), which this callback does not support.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> from gradcam_callback import GradCAMCallback
        >>> trainer = Trainer(callbacks=[GradCAMCallback(target_layer="layer4", num_samples=8)])
    """

    def __init__(
        self,
        target_layer: str | None = None,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        method: str = "gradcam",
        target: str | int | Callable[[Tensor], Tensor] = "predicted",
        *,
        sample_indices: Sequence[int] | None = None,
        dataloader_idx: int = 0,
        input_key: str = "image",
        label_key: str = "label",
        batch_to_input: Callable[[Any], Any] | None = None,
        class_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "jet",
        alpha: float = 0.5,
        show_heatmap: bool = False,
        max_image_size: int | None = 256,
        reshape_transform: Callable[[Tensor], Tensor] | str | None = "auto",
        output_transform: Callable[[Any], Tensor] | None = None,
        mask_keys: Sequence[str] | None = None,
        mask_fn: Callable[[Any], dict[str, Tensor]] | None = None,
        filmstrip_max: int = 12,
        save_gif: bool = False,
        image_format: str = "jpeg",
        image_dir: str | None = None,
        per_sample_images: bool = False,
    ) -> None:
        super().__init__()
        if target_layer is not None and not isinstance(target_layer, str):
            raise TypeError(
                f"target_layer={target_layer!r}: pass the layer's dotted name as "
                "model.named_modules() spells it (e.g. 'backbone.layer4'), or None"
            )
        self.target_layer = target_layer
        self.num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
        self.every_n_epochs = _checks.check_int("every_n_epochs", every_n_epochs, minimum=1)
        self.method = get_method(method).name
        self.target = _check_target(target)
        self.class_names = _checks.check_str_sequence("class_names", class_names)
        normalisation = _checks.check_mean_std(mean, std)
        self.mean, self.std = normalisation if normalisation else (None, None)
        colormap_lut(colormap)  # raises for an unknown name, with the closest ones
        self.colormap = colormap
        self.alpha = _checks.check_float("alpha", alpha, minimum=0.0, maximum=1.0)
        self.show_heatmap = _checks.check_bool("show_heatmap", show_heatmap)
        self.max_image_size = _checks.check_int("max_image_size", max_image_size, minimum=16,
                                                allow_none=True)
        self.reshape_transform = _reshape_transform(reshape_transform)
        self.output_transform = _checks.check_callable("output_transform", output_transform)
        self.filmstrip_max = _checks.check_int("filmstrip_max", filmstrip_max, minimum=2)
        self.save_gif = _checks.check_bool("save_gif", save_gif)
        self.image_format = _checks.check_choice("image_format", image_format, IMAGE_FORMATS)
        if image_dir is not None and not isinstance(image_dir, (str, Path)):
            raise TypeError(f"image_dir={image_dir!r}: must be a directory path (str) or None")
        self.image_dir = image_dir
        self.per_sample_images = _checks.check_bool("per_sample_images", per_sample_images)
        self._reader = SampleReader(
            num_samples=self.num_samples,
            sample_indices=_checks.check_int_sequence("sample_indices", sample_indices),
            dataloader_idx=_checks.check_int("dataloader_idx", dataloader_idx, minimum=0),
            input_key=_checks.check_str("input_key", input_key),
            label_key=_checks.check_str("label_key", label_key),
            batch_to_input=_checks.check_callable("batch_to_input", batch_to_input),
            mask_keys=_checks.check_str_sequence("mask_keys", mask_keys),
            mask_fn=_checks.check_callable("mask_fn", mask_fn),
        )
        self.sample_indices = self._reader.sample_indices

        self.last_metrics: dict[str, float] = {}
        self.last_grid: Tensor | None = None
        self.last_filmstrip: Tensor | None = None
        self._history = History()
        self._samples: dict[str, FixedSamples] = {}
        self._restored_indices: list[int] | None = None
        self._layer_name: str | None = target_layer
        self._reading: str | None = None
        self._sinks: list[ImageSink] | None = None  # chosen at the first picture of a run
        self._dataset_class_names: list[str] | None = None
        self._warned: set[str] = set()

    @property
    @override
    def state_key(self) -> str:
        target = self.target if isinstance(self.target, (str, int)) else "callable"
        return self._generate_state_key(
            target_layer=self.target_layer or "auto", method=self.method, target=target
        )

    @property
    def samples(self) -> FixedSamples | None:
        """The fixed validation samples (``indices``, ``inputs``, ``labels``, ``masks``),
        or ``None`` before the first run."""
        return self._samples.get("validate")

    @property
    def history(self) -> History:
        """The maps of every logged validation run (``epochs``, ``steps``, ``maps``)."""
        return self._history

    @property
    def layer_name(self) -> str | None:
        """The layer explained: ``target_layer``, or the one chosen automatically."""
        return self._layer_name

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        strategy = type(trainer.strategy).__name__
        if strategy in _SHARDED_STRATEGIES:
            raise ValueError(
                f"GradCAMCallback does not support {strategy}: its parameters are sharded "
                "across ranks, so rank zero cannot run the model alone. Use strategy='ddp' "
                "(or explain a checkpoint after training with compute_cam)."
            )
        if self.target_layer is not None:
            resolve_layer(pl_module, self.target_layer)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._restored_indices is None:
            self._history.clear()  # a reused callback starts a new history
        self._samples.clear()
        self._sinks = None

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_skip_validation(trainer):
            return
        self.log_cams(trainer, pl_module, stage="validate")

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_cams(trainer, pl_module, stage="test")

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_filmstrip(trainer)

    def _should_skip_validation(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return True
        fitting = trainer.state.fn == "fit"
        return fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0

    def log_cams(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Compute and log the grid and the scalars now (rank zero only; others return).

        Args:
            trainer: the running trainer.
            pl_module: the model being trained.
            stage: ``"validate"`` or ``"test"``: whose dataloader to take samples from.
                Validation runs during fit also extend the drift history and the filmstrip.
        """
        if not trainer.is_global_zero:
            return
        with preserved_rng_state(pl_module.device):
            samples = self._fixed_samples(trainer, stage)
            inputs = trainer.precision_plugin.convert_input(samples.inputs.to(pl_module.device))
            rows, logits = self._explain(pl_module, inputs, samples.labels)
            captions, wrong = prediction_captions(logits.cpu(), samples.labels,
                                                  self._class_names)
            header = run_header(trainer.current_epoch, trainer.global_step,
                                None if stage == "validate" else stage)
            style = {"colormap": self.colormap, "alpha": self.alpha,
                     "show_heatmap": self.show_heatmap, "header": header}
            images = self._display_images(samples)
            self.last_grid = explanation_grid(images, rows, captions, wrong, **style)
            prefix = f"gradcam/{self._layer_name}/" + ("" if stage == "validate" else f"{stage}/")
            if not self.per_sample_images:
                self._log_image(trainer, prefix + "overlay", self.last_grid, header)
            for i, index in enumerate(samples.indices if self.per_sample_images else []):
                picture = explanation_grid(images[i : i + 1],
                                           [(title, maps[i : i + 1]) for title, maps in rows],
                                           captions[i : i + 1], wrong[i : i + 1], **style)
                self._log_image(trainer, prefix + f"overlay/sample_{index}", picture, header)
            primary = rows[0][1].cpu()
            metrics = self._measure(primary, samples.masks)
            if stage == "validate" and trainer.state.fn == "fit":
                metrics.update(self._history.add(primary, trainer.current_epoch,
                                                 trainer.global_step))
            self.last_metrics = {prefix + name: value for name, value in metrics.items()}
            # epoch in the same call, as Lightning logs it: CSV rows then carry their epoch
            scalars = {**self.last_metrics, "epoch": trainer.current_epoch}
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)

    def _explain(self, pl_module: LightningModule, inputs: Tensor,
                 labels: Tensor | None) -> tuple[list[tuple[str, Tensor]], Tensor]:
        """The maps to show, each with its row title, and the logits of the forward pass."""
        common = {"method": self.method, "reshape_transform": self.reshape_transform,
                  "output_transform": self.output_transform}
        title = get_method(self.method).title
        primary = "predicted" if self.target == "both" else self.target
        result = explain_batch(pl_module, inputs, self._layer_name,
                               self._targets(primary, labels), **common)
        if self._reading is None:
            chosen = "chosen automatically" if self.target_layer is None else "target_layer"
            rank_zero_info(f"GradCAMCallback: explaining {result.layer_name!r} ({chosen}): "
                           f"{result.reading}")
        self._layer_name, self._reading = result.layer_name, result.reading
        if self.target != "both":
            suffix = " (label)" if self.target == "label" else ""
            return [(title + suffix, result.cams)], result.logits
        by_label = explain_batch(pl_module, inputs, self._layer_name,
                                 self._targets("label", labels), **common)
        return [(f"{title} (predicted)", result.cams), (f"{title} (label)", by_label.cams)], \
            result.logits

    def _targets(self, target: Any, labels: Tensor | None) -> Any:
        if target == "predicted":
            return None
        if target == "label":
            if labels is None:
                raise ValueError(
                    f"target={self.target!r} needs class-index labels, but the batch has "
                    f"none: for dict samples set label_key (now {self._reader.label_key!r}), "
                    "or return (inputs, labels) from batch_to_input; labels must be a 1-D "
                    "integer tensor (not one-hot or float)"
                )
            return labels
        return target

    def _display_images(self, samples: FixedSamples) -> Tensor:
        return resize_tiles(to_display(samples.inputs, self.mean, self.std),
                            self.max_image_size)

    def _measure(self, cams: Tensor, masks: dict[str, Tensor]) -> dict[str, float]:
        for name, mask in masks.items():
            empty = ~mask.flatten(1).any(dim=1)
            if empty.any():
                self._warn_once(
                    f"empty_{name}",
                    f"GradCAMCallback: mask {name!r} is empty for samples "
                    f"{empty.nonzero().flatten().tolist()}; their energy_in_mask and "
                    "pointing_game count as 0.",
                )
        return {name: values.mean().item()
                for name, values in attention_scalars(cams, masks).items()}

    def log_filmstrip(self, trainer: Trainer) -> Tensor | None:
        """Log the filmstrip of the runs so far; called at the end of fit.

        One image ``gradcam/<layer>/filmstrip``: a row per fixed sample, a column per logged
        validation run (evenly subsampled to at most ``filmstrip_max``), the epoch above
        each. With ``save_gif``, also an animated GIF per sample. Rank zero only.

        Returns:
            The filmstrip as uint8 ``(3, H, W)``, or ``None`` on other ranks or before any run.
        """
        if not trainer.is_global_zero or not len(self._history):
            return None
        samples = self._fixed_samples(trainer, "validate")
        runs = evenly_spaced(len(self._history), self.filmstrip_max)
        maps = self._history.maps[runs]  # type: ignore[index]
        titles = [f"epoch {self._history.epochs[r]}" for r in runs]
        images = self._display_images(samples)
        rows = [sample_title(index, None if samples.labels is None else int(samples.labels[i]),
                             self._class_names) for i, index in enumerate(samples.indices)]
        style = {"colormap": self.colormap, "alpha": self.alpha}
        header = (f"filmstrip · epochs {self._history.epochs[0]}-{self._history.epochs[-1]}"
                  f" · step {trainer.global_step}")
        strip = filmstrip(images, maps, titles, rows, header=header, **style)
        self.last_filmstrip = strip
        self._log_image(trainer, f"gradcam/{self._layer_name}/filmstrip", strip, header)
        if self.save_gif:
            self._save_gifs(trainer, samples, filmstrip_frames(images, maps, titles, **style))
        return strip

    def _save_gifs(self, trainer: Trainer, samples: FixedSamples,
                   frames: list[list[Tensor]]) -> None:
        directory = self._file_directory(trainer)
        if directory is None:
            self._warn_once("gif_nowhere", "GradCAMCallback(save_gif=True): no image_dir and "
                            "no logger with a directory; no GIFs written.")
            return
        directory.mkdir(parents=True, exist_ok=True)
        for index, sample_frames in zip(samples.indices, frames, strict=True):
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

    def _fixed_samples(self, trainer: Trainer, stage: str) -> FixedSamples:
        if stage not in self._samples:
            loaders = trainer.val_dataloaders if stage == "validate" else trainer.test_dataloaders
            loader = self._reader.dataloader(loaders, stage)
            wanted = self._reader.wanted_indices()
            if stage == "validate" and self._restored_indices is not None:
                wanted = self._restored_indices
            self._samples[stage] = self._reader.read(loader, wanted, stage, self._warn_once)
            self._dataset_class_names = _names_of(getattr(loader, "dataset", None))
        return self._samples[stage]

    @property
    def _class_names(self) -> Sequence[str] | None:
        """``class_names``, else the dataset's own (``classes`` or ``class_names``)."""
        return self.class_names if self.class_names is not None else self._dataset_class_names

    def _log_image(self, trainer: Trainer, tag: str, picture: Tensor, caption: str = "") -> None:
        if self._sinks is None:
            self._sinks = image_sinks(trainer.loggers, self.image_dir, self.image_format,
                                      trainer.default_root_dir)
            if not self._sinks:
                self._warn_once("no_sinks", "GradCAMCallback: no logger takes pictures and no "
                                "image_dir is set; pictures are not saved. Pass image_dir= to "
                                "write them as files.")
        for sink in self._sinks:
            sink.log_image(tag, picture, trainer.global_step, caption)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    @override
    def state_dict(self) -> dict[str, Any]:
        samples = self._samples.get("validate")
        indices = samples.indices if samples is not None else self._restored_indices
        return {"layer_name": self._layer_name, "sample_indices": indices,
                **self._history.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._layer_name = state_dict.get("layer_name", self._layer_name)
        self._restored_indices = state_dict.get("sample_indices")
        self._history.load_state_dict(state_dict)
        self._samples.clear()


def _check_target(target: object) -> str | int | Callable[[Tensor], Tensor]:
    if callable(target) and not isinstance(target, str):
        return target  # type: ignore[return-value]
    if isinstance(target, str):
        return _checks.check_choice("target", target, _TARGET_WORDS)
    if _checks.is_number(target) and float(target) == int(target) and int(target) >= 0:  # type: ignore[arg-type]
        return int(target)  # type: ignore[arg-type]
    kind = TypeError if not _checks.is_number(target) else ValueError
    raise kind(
        f"target={target!r}: valid targets are 'predicted', 'label', 'both', a class index "
        ">= 0, or a callable logits -> (N,) scores"
    )


def _names_of(dataset: object) -> list[str] | None:
    """A dataset's class names (torchvision's ``classes``, or ``class_names``), if any."""
    for attribute in ("classes", "class_names"):
        names = getattr(dataset, attribute, None)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def _reshape_transform(value: object) -> Callable[[Tensor], Tensor] | str:
    """A named reading (``"auto"``, ``"nchw"``, ``"nhwc"``, ``"tokens"``, ``"tokens:<n>"``,
    ``"vit"``; ``None`` is ``"auto"``), usable from YAML, or a callable."""
    return check_reading(value)
