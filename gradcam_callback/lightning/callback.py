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

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradcam_callback import _checks
from gradcam_callback.engine import explain_batch, get_method, resolve_layer
from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.engine.transforms import vit_reshape_transform
from gradcam_callback.lightning.display import Display, choose_display
from gradcam_callback.lightning.history import History, evenly_spaced
from gradcam_callback.lightning.samples import FixedSamples, SampleReader
from gradcam_callback.lightning.sinks import ImageSink, image_sinks
from gradcam_callback.lightning.statistics import (
    MIN_CELLS,
    StatisticsResult,
    collect_statistics,
    earlier_layer,
    parse_alarms,
)
from gradcam_callback.metrics import attention_scalars
from gradcam_callback.render import (
    IMAGE_FORMATS,
    class_name,
    colormap_lut,
    encode_gif,
    explanation_grid,
    filmstrip,
    filmstrip_frames,
    prediction_captions,
    resize_tiles,
    to_display,
)
from gradcam_callback.render.class_maps import class_maps_grid

__all__ = ["GradCAMCallback"]

_TARGET_WORDS = ("predicted", "label", "both")
_ALARM_ACTIONS = ("warn", "stop")
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

    Scalars go to every logger at the same step, under ``gradcam/<layer>/``, as means
    over the first ``metric_samples`` validation samples, each with ``_std`` and
    ``_ci95`` (see :mod:`.statistics`): ``border_lift`` and ``border_energy`` (the outer
    10% frame: borders, corner patches, watermarks), ``location_consistency`` (needs no
    mask), and for each region mask the batch provides ``lift/<name>`` (energy in the mask
    / the mask's area share; 1.0 = no preference), ``area/<name>``,
    ``energy_in_mask/<name>`` and ``pointing_game/<name>`` (within one CAM cell); from the
    second run on ``drift`` (against the previous run) and ``drift_from_start`` (against
    the first), from the shown samples. The same scalars reach ``trainer.callback_metrics``
    on every rank (``EarlyStopping(monitor="gradcam/<layer>/lift/<name>")`` works), and
    ``gradcam/<layer>/class_maps`` shows the mean map per class. Formulas in
    :mod:`gradcam_callback.metrics`. At the end of fit, ``gradcam/<layer>/filmstrip`` shows
    every sample's map across the runs in one picture.

    Pictures go to every logger that can show them: a TensorBoard logger's event file;
    for other loggers with a run directory (CSV), image files in ``<log_dir>/gradcam``;
    and, when ``image_dir`` is given, image files there too.

    The last grid and scalars stay available as ``last_grid`` (uint8 ``(3, H, W)``) and
    ``last_metrics``; the fixed samples as :attr:`samples`, the maps of every run as
    :attr:`history`.

    Explaining the model has no effect on training: the model runs in eval mode for the
    computation only, no ``.grad`` is touched, and the global RNG states are restored, so
    a seeded, deterministic run trains bit-identically with and without the callback.

    Args:
        target_layer: dotted name of the layer to explain, as ``model.named_modules()``
            spells it (``"backbone.layer4"``); ``None`` picks the last layer with a spatial
            output (printed in the tag).
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
        std: per-channel std used to normalise the inputs. Without ``mean``/``std`` they
            are taken from a torchvision ``Normalize`` in the validation dataset's
            transform when there is one; otherwise the batch is min-max scaled jointly
            (not each image on its own, so a tint that tells classes apart stays visible).
            One info line says which.
        colormap: any matplotlib colormap name.
        alpha: heatmap opacity in the overlay, in ``[0, 1]``.
        show_heatmap: add a row with the bare heatmaps.
        max_image_size: downscale tiles whose longer side exceeds this (pixels);
            ``None`` keeps the input size. Small inputs are upscaled to stay legible.
        reshape_transform: for non-spatial layers such as ViT blocks: a callable such as
            ``gradcam_callback.vit_reshape_transform(num_prefix_tokens=1)``, or the string
            ``"vit"`` for that one (convenient in YAML).
        output_transform: picks the logits out of a model output that is not a tensor.
        mask_keys: keys of dict batches holding region masks ``(N, H, W)`` to measure CAM
            energy in; ``None`` takes every key ending in ``"_mask"``.
        mask_fn: a callable ``batch -> {name: (N, H, W) bool mask}``, for other formats.
        filmstrip_max: at most this many runs (columns) in the filmstrip, evenly spread.
        save_gif: also write an animated GIF of each sample's maps over the runs (into
            ``image_dir``, or the first logger's run directory).
        image_format: how grids are encoded in the event files and image files:
            ``"jpeg"`` (quality 90) or ``"png"`` (lossless, several times larger).
            Size matters twice: on disk, and because TensorBoard's writer computes a
            pure-Python checksum of every event (about 0.2 s of CPU per MB).
        image_dir: also write every picture as a file into this directory.
        metric_samples: the scalars are means over the first ``metric_samples``
            validation samples (capped at the dataset's size), explained at every logged
            run in chunks of ``metric_batch_size`` (under DDP each rank explains its share
            and the sums are added), each logged with its spread (``<name>_std``,
            ``<name>_ci95``), plus ``location_consistency`` and the ``class_maps``
            picture. The scalars also reach ``trainer.callback_metrics`` on every rank, so
            ``EarlyStopping``/``ModelCheckpoint`` can monitor them. ``0`` turns this off:
            the scalars then come from the ``num_samples`` shown, to the loggers only.
        metric_batch_size: samples per chunk (memory is set by the chunk).
        alarms: thresholds on scalars, by tag suffix, e.g.
            ``{"lift/watermark_mask": ">2", "location_consistency": ">=0.9"}``; when one
            is crossed, one warning names the metric, its value and the epoch.
        alarm_action: ``"warn"``, or ``"stop"`` to also stop training
            (``trainer.should_stop``, the same decision on every rank).

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
        reshape_transform: Callable[[Tensor], Tensor] | str | None = None,
        output_transform: Callable[[Any], Tensor] | None = None,
        mask_keys: Sequence[str] | None = None,
        mask_fn: Callable[[Any], dict[str, Tensor]] | None = None,
        filmstrip_max: int = 12,
        save_gif: bool = False,
        image_format: str = "jpeg",
        image_dir: str | None = None,
        metric_samples: int = 256,
        metric_batch_size: int = 64,
        alarms: dict[str, str] | None = None,
        alarm_action: str = "warn",
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
        self.metric_samples = _checks.check_int("metric_samples", metric_samples, minimum=0)
        self.metric_batch_size = _checks.check_int("metric_batch_size", metric_batch_size,
                                                   minimum=1)
        self._alarms = parse_alarms(alarms)
        self.alarms = dict(alarms) if alarms else {}
        self.alarm_action = _checks.check_choice("alarm_action", alarm_action, _ALARM_ACTIONS)
        self.last_statistics: StatisticsResult | None = None
        self.last_class_maps: Tensor | None = None
        self._display: Display | None = None
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
        self._history = History()
        self._samples: dict[str, FixedSamples] = {}
        self._restored_indices: list[int] | None = None
        self._layer_name: str | None = target_layer
        self._sinks: list[ImageSink] = []
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
        self._sinks = []

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
        statistics = self._attention_statistics(trainer, pl_module, stage)  # every rank
        if not trainer.is_global_zero:
            return
        with preserved_rng_state(pl_module.device):
            samples = self._fixed_samples(trainer, stage)
            inputs = trainer.precision_plugin.convert_input(samples.inputs.to(pl_module.device))
            rows, logits = self._explain(pl_module, inputs, samples.labels)
            captions, wrong = prediction_captions(logits.cpu(), samples.labels,
                                                  self.class_names)
            self.last_grid = explanation_grid(
                self._display_images(samples), rows, captions, wrong, colormap=self.colormap,
                alpha=self.alpha, show_heatmap=self.show_heatmap)
            prefix = f"gradcam/{self._layer_name}/" + ("" if stage == "validate" else f"{stage}/")
            self._log_image(trainer, prefix + "overlay", self.last_grid)
            primary = rows[0][1].cpu()
            metrics = self._scalars(primary, samples, statistics)
            if statistics is not None:
                self._log_class_maps(trainer, prefix, statistics)
            if stage == "validate" and trainer.state.fn == "fit":
                metrics.update(self._history.add(primary, trainer.current_epoch,
                                                 trainer.global_step))
            self.last_metrics = {prefix + name: value for name, value in metrics.items()}
            for logger in trainer.loggers:
                logger.log_metrics(self.last_metrics, step=trainer.global_step)

    def _explain(self, pl_module: LightningModule, inputs: Tensor,
                 labels: Tensor | None) -> tuple[list[tuple[str, Tensor]], Tensor]:
        """The maps to show, each with its row title, and the logits of the forward pass."""
        common = {"method": self.method, "reshape_transform": self.reshape_transform,
                  "output_transform": self.output_transform}
        title = get_method(self.method).title
        primary = "predicted" if self.target == "both" else self.target
        result = explain_batch(pl_module, inputs, self._layer_name,
                               self._targets(primary, labels), **common)
        self._layer_name = result.layer_name
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
        display = self._display or Display(self.mean, self.std, joint=self.mean is None,
                                           source="")
        return resize_tiles(to_display(samples.inputs, display.mean, display.std,
                                       joint=display.joint), self.max_image_size)

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

    def _attention_statistics(self, trainer: Trainer, pl_module: LightningModule,
                              stage: str) -> StatisticsResult | None:
        """The many-sample statistics, on every rank: each rank explains its share of the
        first ``metric_samples`` samples, the sums are added (every rank takes part), the
        scalars go to ``trainer.callback_metrics`` and are checked against the alarms.
        ``None`` when ``metric_samples=0``."""
        loaders = trainer.val_dataloaders if stage == "validate" else trainer.test_dataloaders
        loader = self._reader.dataloader(loaders, stage)
        self._choose_display(loader)
        total = _dataset_size(loader.dataset, self.metric_samples)
        if not total:
            return None
        primary = "predicted" if self.target == "both" else self.target

        def read_chunk(indices: Sequence[int]) -> tuple[Tensor, Tensor | None,
                                                         dict[str, Tensor]]:
            chunk = self._reader.read(loader, indices, stage, self._warn_once)
            self._warn_empty_masks(chunk)
            return chunk.inputs, chunk.labels, chunk.masks

        device = pl_module.device
        with preserved_rng_state(device):
            result, layer_name = collect_statistics(
                pl_module, read_chunk, range(trainer.global_rank, total, trainer.world_size),
                self._layer_name, targets=lambda labels: self._targets(primary, labels),
                chunk_size=self.metric_batch_size,
                explain_options={"method": self.method,
                                 "reshape_transform": self.reshape_transform,
                                 "output_transform": self.output_transform},
                reduce_sum=lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
                broadcast=lambda obj: trainer.strategy.broadcast(obj, src=0),
                device=device,
                prepare=lambda x: trainer.precision_plugin.convert_input(x.to(device)))
        self._layer_name = layer_name or self._layer_name
        self.last_statistics = result
        if trainer.is_global_zero:
            self._warn_if_coarse(pl_module, result, read_chunk)
        prefix = f"gradcam/{self._layer_name}/" + ("" if stage == "validate" else f"{stage}/")
        self._publish(trainer, pl_module, prefix, result.scalars)
        self._check_alarms(trainer, result.scalars)
        return result

    def _warn_empty_masks(self, chunk: FixedSamples) -> None:
        for name, mask in chunk.masks.items():
            empty = (~mask.flatten(1).any(dim=1)).nonzero().flatten().tolist()
            if empty:
                self._warn_once(
                    f"empty_{name}",
                    f"GradCAMCallback: mask {name!r} is empty for samples "
                    f"{[chunk.indices[i] for i in empty]}; their lift, energy_in_mask and "
                    "pointing_game count as 0.")

    def _choose_display(self, loader: Any) -> None:
        if self._display is None:
            self._display = choose_display(self.mean, self.std, getattr(loader, "dataset", None))
            if self.mean is None:
                rank_zero_info(f"GradCAMCallback display: {self._display.source}")

    def _publish(self, trainer: Trainer, pl_module: LightningModule, prefix: str,
                 scalars: dict[str, float]) -> None:
        """Put the scalars into ``trainer.callback_metrics`` (not into the loggers: rank zero
        logs them at the global step), through ``pl_module.log`` inside a hook."""
        in_hook = getattr(pl_module, "_current_fx_name", None) is not None
        for name, value in scalars.items():
            if in_hook:
                pl_module.log(prefix + name, value, logger=False, on_step=False,
                              on_epoch=True, batch_size=1, sync_dist=False)
            else:
                trainer.callback_metrics[prefix + name] = torch.tensor(value)

    def _check_alarms(self, trainer: Trainer, scalars: dict[str, float]) -> None:
        for alarm in self._alarms:
            value = scalars.get(alarm.metric)
            if value is None:
                close = difflib.get_close_matches(alarm.metric, list(scalars), n=3)
                self._warn_once(
                    f"alarm_unknown_{alarm.metric}",
                    f"GradCAMCallback: alarms[{alarm.metric!r}]: there is no such scalar"
                    + (f"; did you mean {', '.join(map(repr, close))}?" if close else
                       f"; the scalars are {', '.join(sorted(scalars))}"))
            elif alarm.fires(value):
                stop = self.alarm_action == "stop"
                self._warn_once(
                    f"alarm_{alarm.metric}",
                    f"GradCAMCallback alarm: {alarm.metric} = {value:.4g} at epoch "
                    f"{trainer.current_epoch} (step {trainer.global_step}) crosses "
                    f"{alarm.describe()}" + ("; stopping training." if stop else "."))
                if stop:
                    trainer.should_stop = True

    def _warn_if_coarse(self, pl_module: LightningModule, result: StatisticsResult,
                        read_chunk: Callable[[Sequence[int]], Any]) -> None:
        height, width = result.layer_size
        if min(height, width) >= MIN_CELLS or "coarse" in self._warned:
            return
        inputs = read_chunk([0])[0].to(pl_module.device)
        with preserved_rng_state(pl_module.device), eval_mode(pl_module):
            earlier = earlier_layer(pl_module, inputs, str(self._layer_name))
        self._warn_once(
            "coarse",
            f"GradCAMCallback: layer {self._layer_name!r} gives {height}x{width} maps for "
            f"{result.input_size[0]}x{result.input_size[1]} inputs: too coarse for "
            f"border_lift, lift and pointing_game (one cell covers {result.cell_pixels} px, "
            "so they barely move between epochs). Explain an earlier layer"
            + (f", e.g. target_layer={earlier!r}." if earlier else "."))

    def _scalars(self, cams: Tensor, samples: FixedSamples,
                 statistics: StatisticsResult | None) -> dict[str, float]:
        if statistics is None:
            return self._measure(cams, samples.masks)
        return {**statistics.scalars, "metric_samples": float(statistics.count)}

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
        rows = [f"#{index}" + ("" if samples.labels is None
                               else f" {class_name(int(samples.labels[i]), self.class_names)}")
                for i, index in enumerate(samples.indices)]
        style = {"colormap": self.colormap, "alpha": self.alpha}
        strip = filmstrip(images, maps, titles, rows, **style)
        self._log_image(trainer, f"gradcam/{self._layer_name}/filmstrip", strip)
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
        return self._samples[stage]

    def _log_image(self, trainer: Trainer, tag: str, picture: Tensor) -> None:
        if not self._sinks:
            self._sinks = image_sinks(trainer.loggers, self.image_dir, self.image_format)
            if not self._sinks:
                self._warn_once("no_sinks", "GradCAMCallback: no logger can show pictures "
                                "(loggers are off) and no image_dir is set; pictures are not "
                                "saved. Pass image_dir= to write them as files.")
        for sink in self._sinks:
            sink.log_image(tag, picture, trainer.global_step)

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


def _dataset_size(dataset: Any, limit: int) -> int:
    """How many metric samples a dataset gives: ``limit`` capped at its length (an
    iterable dataset without a length is taken at its word)."""
    try:
        return min(limit, len(dataset))
    except TypeError:
        return limit


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


def _reshape_transform(value: object) -> Callable[[Tensor], Tensor] | None:
    if value is None or (callable(value) and not isinstance(value, str)):
        return value  # type: ignore[return-value]
    if value == "vit":
        return vit_reshape_transform(num_prefix_tokens=1)
    raise ValueError(
        f"reshape_transform={value!r}: pass a callable, 'vit' (tokens with one class token), "
        "or None"
    )

