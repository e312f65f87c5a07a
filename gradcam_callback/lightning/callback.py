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

Fail fast, then never stop training: before the first training step (after the
sanity check) and at the start of ``validate``/``test``, rank zero runs the whole
pipeline once on the fixed samples (fetch, split, masks, targets, forward, CAM,
render, encode; nothing is logged, no random number drawn), so a wrong option or a
batch the callback cannot read fails in seconds with a message that names it. After
that, a failure of the callback's own work (a full disk, a file where the image
folder should be, the model's forward raising in the CAM pass, NaN outputs) is
reported once with its cause and a fix, that run is skipped, and the next run tries
again; after three failed runs in a row the callback switches itself off and says so.
Nothing raises out of ``on_fit_end``. ``on_error="raise"`` raises instead (for CI).

Any size: CAMs are computed in chunks of ``batch_size`` samples (memory is set by the
chunk, not by ``num_samples``), and pictures show at most ``samples_per_page``
samples (fewer if that many would pass JPEG's 65,500 px limit): one page keeps the
tag ``.../overlay``, several are logged as ``.../overlay/page_1``, ``page_2``, ...
(the filmstrip likewise, a row per sample).

Resume and reuse: the checkpointed state is versioned; the sample indices shown
before a resume are kept unless ``num_samples``, ``sample_indices`` or
``dataloader_idx`` changed (then the new options win, with one warning naming old
and new, and the drift history restarts); maps of another size are resized into the
history. A new ``fit`` without a checkpoint starts a new history; reloaded
validation dataloaders (``reload_dataloaders_every_n_epochs``) are read again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradcam_callback.engine import resolve_layer
from gradcam_callback.engine.scopes import preserved_rng_state
from gradcam_callback.lightning._attention import AttentionMixin
from gradcam_callback.lightning._explaining import ExplainingMixin
from gradcam_callback.lightning._pictures import PicturesMixin
from gradcam_callback.lightning._safety import SafetyMixin
from gradcam_callback.lightning._state import StateMixin
from gradcam_callback.lightning.options import validated_options
from gradcam_callback.lightning.samples import (
    SampleReader,
)
from gradcam_callback.lightning.statistics import (
    StatisticsResult,
)
from gradcam_callback.render import (
    prediction_captions,
    run_header,
)

__all__ = ["GradCAMCallback"]

_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


class GradCAMCallback(PicturesMixin, AttentionMixin, SafetyMixin, StateMixin, ExplainingMixin,
                     Callback):
    r"""Log Grad-CAM overlays of fixed validation images, and attention scalars, during training.

    What it logs, where the pictures go, and how it stays out of training's way: see
    the module docstring and the README.

    Args:
        target_layer: the layer's dotted name as ``model.named_modules()`` spells it;
            ``None`` picks one (logged once with its reading, used in the tags).
        num_samples: how many validation samples to show (the first ones by index).
        every_n_epochs: log on every n-th epoch.
        method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"``, ``"eigencam"``, or a name added with ``register_method``.
        target: ``"predicted"``, ``"label"`` (the batch's class), ``"both"`` (two rows),
            a class index, or a callable ``logits -> (N,)`` scores.
        sample_indices: dataset indices to show instead of the first ``num_samples``.
        dataloader_idx: which validation (and test) dataloader to take samples from.
        input_key: the images' key when the dataset yields dicts.
        label_key: the labels' key when the dataset yields dicts (missing = no labels).
        batch_to_input: a callable ``batch -> inputs`` or ``batch -> (inputs, labels)``
            for other batch formats (an import path in YAML).
        class_names: names shown instead of class indices (default: the dataset's own).
        mean: per-channel mean of the input normalisation, undone for display.
        std: per-channel std of it. Without both: the dataset's torchvision ``Normalize``
            if any, else the batch min-max scaled jointly (a tint stays visible).
        colormap: any matplotlib colormap name.
        alpha: heatmap opacity in the overlay, in ``[0, 1]``.
        show_heatmap: add a row with the bare heatmaps.
        max_image_size: downscale tiles whose longer side exceeds this (``None``: never).
        reshape_transform: how to read the layer's output: ``"auto"``, ``"nchw"``,
            ``"nhwc"``, ``"tokens"`` (alias ``"vit"``), ``"tokens:<n>"``, or a callable.
        output_transform: picks the logits out of a model output that is not a tensor.
        mask_keys: dict-batch keys of region masks ``(N, H, W)``; ``None``: every key
            ending in ``"_mask"`` that holds one. Soft masks count above 0.5.
        mask_fn: a callable ``batch -> {name: (N, H, W) mask}``, for other formats.
        filmstrip_max: at most this many runs (columns) in the filmstrip, evenly spread.
        save_gif: also write an animated GIF per sample into the run's image folder.
        image_format: ``"jpeg"`` (quality 90) or ``"png"`` (lossless, larger events).
        image_dir: also write every picture as a file, into ``<image_dir>/version_<n>``.
        per_sample_images: one picture per sample (``.../overlay/sample_<i>``) instead of
            the grid: legible in TensorBoard's default card size.
        batch_size: explain at most this many samples per forward pass.
        samples_per_page: at most this many samples a picture; more go to ``.../page_<k>``.
        on_error: ``"warn"``: a failed run is reported once and skipped (off after 3 in a
            row); ``"raise"``: it raises (for CI). Checks before training always raise.
        metric_samples: scalars are means (with ``_std``, ``_ci95``) over this many
            validation samples, shared across DDP ranks, also in
            ``trainer.callback_metrics``; ``0``: from the shown samples, loggers only.
        metric_batch_size: samples per chunk of the statistics (sets their memory).
        alarms: thresholds by tag suffix, e.g. ``{"lift/watermark_mask": ">2"}``: one
            warning names the metric, its value and the epoch.
        alarm_action: ``"warn"``, or ``"stop"`` to also stop training (on every rank).

    Raises:
        TypeError: an argument of the wrong type (the message names it and says what is valid).
        ValueError: an argument out of its valid range; at setup, an unknown
            ``target_layer`` (with the closest names) or a sharded strategy (FSDP,
            DeepSpeed), which this callback does not support; before training (or
            ``validate``/``test``), anything the check on the fixed samples finds.

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
        batch_size: int = 32,
        samples_per_page: int = 16,
        on_error: Literal["warn", "raise"] = "warn",
        metric_samples: int = 256,
        metric_batch_size: int = 64,
        alarms: dict[str, str] | None = None,
        alarm_action: str = "warn",
    ) -> None:
        super().__init__()
        options = validated_options(**{k: v for k, v in locals().items()
                                       if k not in ("self", "__class__")})
        for name, value in options.items():
            setattr(self, name, value)
        self._reader = SampleReader(
            num_samples=self.num_samples, sample_indices=self.sample_indices,
            dataloader_idx=self.dataloader_idx, input_key=self.input_key,
            label_key=self.label_key, batch_to_input=self.batch_to_input,
            mask_keys=self.mask_keys, mask_fn=self.mask_fn)
        self._init_run_state()


    @property
    @override
    def state_key(self) -> str:
        target = self.target if isinstance(self.target, (str, int)) else "callable"
        return self._generate_state_key(
            target_layer=self.target_layer or "auto", method=self.method, target=target
        )

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
        self._loaded_checkpoint = False  # a checkpoint, if any, is loaded after setup

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._loaded_checkpoint:
            self._history.clear()  # a reused callback starts a new history
            self._restored_indices = None
        self._start_run(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_before(trainer, pl_module, "validate")

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._start_run(trainer)
            self._check_before(trainer, pl_module, "validate")

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_run(trainer)
        self._check_before(trainer, pl_module, "test")

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
        self._guarded(trainer, "the filmstrip at the end of fit", self.log_filmstrip, trainer)

    def _should_skip_validation(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return True
        fitting = trainer.state.fn == "fit"
        return fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0

    def log_cams(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Compute and log the grid and the scalars now. Call it on every rank.

        Every rank takes part in the many-sample statistics (``metric_samples``); rank zero
        then renders and logs, under the failure policy (``on_error``).

        Args:
            trainer: the running trainer.
            pl_module: the model being trained.
            stage: ``"validate"`` or ``"test"``: whose dataloader to take samples from.
                Validation runs during fit also extend the drift history and the filmstrip.
        """
        statistics = self._statistics_on_every_rank(trainer, pl_module, stage)
        self._guarded(trainer, self._run_name(trainer, stage), self._log_run, trainer,
                      pl_module, stage, statistics)

    def _log_run(self, trainer: Trainer, pl_module: LightningModule, stage: str,
                 statistics: StatisticsResult | None) -> None:
        """Rank zero's part of :meth:`log_cams`: explain, render, measure, log."""
        with preserved_rng_state(pl_module.device):
            self._progress("reading the samples")
            samples = self._fixed_samples(trainer, stage)
            self._progress("explaining")
            rows, logits = self._explain_samples(trainer, pl_module, samples)
            captions, wrong = prediction_captions(logits.cpu(), samples.labels,
                                                  self._class_names)
            header = run_header(trainer.current_epoch, trainer.global_step,
                                None if stage == "validate" else stage)
            self._progress("rendering")
            self.last_pages = self._grid_pages(samples, rows, captions, wrong, header=header)
            self.last_grid = self.last_pages[0]
            prefix = f"gradcam/{self._layer_name}/" + ("" if stage == "validate" else f"{stage}/")
            self._progress("measuring")
            primary = rows[0][1].cpu()
            metrics = self._scalars(primary, samples, statistics)
            if statistics is not None:
                self._log_class_maps(trainer, prefix, statistics)
            if stage == "validate" and trainer.state.fn == "fit":
                metrics.update(self._history.add(primary, trainer.current_epoch,
                                                 trainer.global_step))
            self.last_metrics = {prefix + name: value for name, value in metrics.items()}
            self._progress("logging scalars")
            # epoch in the same call, as Lightning logs it: CSV rows then carry their epoch
            scalars = {**self.last_metrics, "epoch": trainer.current_epoch}
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
            # pictures last: a sink that fails (a full disk) costs neither the scalars
            # nor the drift history
            if self.per_sample_images:
                self._log_samples(trainer, prefix + "overlay", samples, rows, captions, wrong,
                                  header)
            else:
                self._log_pages(trainer, prefix + "overlay", self.last_pages, header)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)













