"""
Grad-CAM Callback
=================

Watch where the model looks while it trains: at the end of validation runs (and, with
``every_n_steps``, every N training steps), compute class activation maps on a fixed set
of validation images and log an annotated grid and attention scalars to the trainer's
loggers.

This module is orchestration only: *when* to run and *what* to call. The callback holds
its collaborators, each a small class that knows no Lightning: the options
(:mod:`gradcam_callback.options`), the fixed samples (:mod:`gradcam_callback.samples`),
the explainer (:mod:`gradcam_callback.explainer`), the statistics
(:mod:`gradcam_callback.statistics`), the pictures (:mod:`gradcam_callback.pictures`),
the history (:mod:`gradcam_callback.history`), the failure policy
(:mod:`gradcam_callback.guard`) and the warnings (:mod:`gradcam_callback.notices`); on the
Lightning side, the sinks (:mod:`.sinks`) and what is asked of the trainer
(:mod:`.trainer_api`). The docs (``docs/pictures.md``, ``docs/loggers.md``) say what
is logged, where, and when.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradcam_callback.engine import resolve_layer
from gradcam_callback.engine.scopes import preserved_rng_state
from gradcam_callback.guard import MAX_CONSECUTIVE_FAILURES, RunGuard
from gradcam_callback.lightning import trainer_api as api
from gradcam_callback.lightning.sinks import PictureSinks
from gradcam_callback.notices import Notices
from gradcam_callback.observer import Observer, Run
from gradcam_callback.options import CallbackOptions, validated_options

if TYPE_CHECKING:
    from gradcam_callback.guard import Failure
    from gradcam_callback.history import History
    from gradcam_callback.samples import FixedSamples
    from gradcam_callback.sanity import SanityResult
    from gradcam_callback.statistics import StatisticsResult

__all__ = ["GradCAMCallback"]

_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


class GradCAMCallback(Callback):
    r"""Log Grad-CAM overlays of fixed validation images, and attention scalars, during training.

    Every option is also an attribute (``callback.num_samples``); assigning one validates it
    and applies it to every part of the callback at once, or raises and changes nothing
    (a list or dict read is a copy: change it by assigning a new one).

    Args:
        target_layer: the layer's dotted name (``model.named_modules()``); ``None``: chosen.
        num_samples: how many validation samples to show (the first ones by index).
        every_n_epochs: log on every n-th epoch's validation runs.
        method: ``"gradcam"`` or another of ``available_methods()`` (``register_method``).
        target: ``"predicted"``, ``"label"``, ``"both"``, a class, or ``logits -> (N,)``.
        sample_indices: dataset indices to show instead of the first ``num_samples``.
        dataloader_idx: which validation (and test) dataloader to take samples from.
        input_key: the images' key when the dataset yields dicts.
        label_key: the labels' key when the dataset yields dicts (missing = no labels).
        batch_to_input: ``batch -> inputs`` or ``-> (inputs, labels)``, for other formats.
        class_names: names shown instead of class indices (default: the dataset's own).
        mean: per-channel mean of the input normalisation, undone for display.
        std: its per-channel std (without both: the dataset's ``Normalize``, if any).
        colormap: any matplotlib colormap name.
        alpha: heatmap opacity in the overlay, in ``[0, 1]``.
        show_heatmap: add a row with the bare heatmaps.
        max_image_size: downscale tiles whose longer side exceeds this (``None``: never).
        reshape_transform: ``"auto"``, ``"nchw"``, ``"nhwc"``, ``"tokens[:<n>]"``, a callable.
        output_transform: picks the logits out of a model output that is not a tensor.
        mask_keys: dict-batch keys of region masks ``(N, H, W)`` (default: ``*_mask``).
        mask_fn: a callable ``batch -> {name: (N, H, W) mask}``, for other formats.
        filmstrip_max: at most this many runs (columns) in the filmstrip, evenly spread.
        save_gif: also write an animated GIF per sample into the run's image folder.
        image_format: ``"jpeg"`` (quality 90) or ``"png"`` (lossless, larger events).
        image_dir: also write every picture as a file, into ``<image_dir>/version_<n>``.
        per_sample_images: one picture per sample (``.../overlay/sample_<i>``), not a grid.
        batch_size: explain at most this many samples per forward pass.
        samples_per_page: at most this many samples a picture; more go to ``.../page_<k>``.
        on_error: ``"warn"``: a failed run is reported and skipped; ``"raise"`` (for CI).
        metric_samples: scalars are means (with ``_std``, ``_ci95``) over this many
            validation samples, shared across DDP ranks, also in
            ``trainer.callback_metrics``; ``0``: from the shown samples only.
        metric_batch_size: samples per chunk of the statistics (sets their memory).
        alarms: thresholds by tag suffix, e.g. ``{"lift/watermark_mask": ">2"}`` (warns).
        alarm_action: ``"warn"``, or ``"stop"`` to also stop training (on every rank).
        every_n_steps: also explain the validation samples every n training steps.
        task: ``"auto"`` (read from the output and labels), ``"multiclass"``, ``"binary"``,
            ``"multilabel"``, ``"segmentation"`` or ``"regression"`` (docs: Tasks and input kinds).
        threshold: multi-label: a label is predicted where its sigmoid is above this.
        background: segmentation: the class ``"predicted"`` passes over (``None``: none).
        slice_axis: volumes: the spatial axis sliced for the pictures, 0 (depth, the
            default), 1 (height) or 2 (width).
        signal_channels: signals: the channel(s) drawn as lines (default: the first three).
        faithfulness_samples: deletion, insertion and mask deletion on the first this many
            metric samples at each run (``faithfulness/...``); ``0``: none.
        sanity_layers: at the end of fit, compare the maps with those of the model whose
            last this many layers are re-initialised (restored after); ``0``: no check.

    Raises:
        TypeError: an argument of the wrong type (the message names it and what is valid).
        ValueError: an argument out of range; at setup, an unknown ``target_layer`` (with
            the closest names) or a sharded strategy (FSDP, DeepSpeed); before training
            (or ``validate``/``test``), anything the check on the fixed samples finds.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> from gradcam_callback import GradCAMCallback
        >>> trainer = Trainer(callbacks=[GradCAMCallback(target_layer="layer4", num_samples=8)])
    """

    if TYPE_CHECKING:  # the read-only views, defined below the class (see _VIEWS)
        options: CallbackOptions
        failures: tuple[Failure, ...]
        switched_off: bool
        samples: FixedSamples | None
        history: History
        layer_name: str | None
        last_metrics: dict[str, float]
        last_statistics: StatisticsResult | None
        last_grid: Tensor | None
        last_pages: list[Tensor]
        last_class_maps: Tensor | None
        last_filmstrip: Tensor | None

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
        every_n_steps: int | None = None,
        task: Literal["auto", "multiclass", "binary", "multilabel", "segmentation",
                      "regression"] = "auto",
        threshold: float = 0.5,
        background: int | None = 0,
        slice_axis: int | None = None,
        signal_channels: int | Sequence[int] | None = None,
        faithfulness_samples: int = 24,
        sanity_layers: int = 1,
    ) -> None:
        super().__init__()
        self._options = options = validated_options(**{k: v for k, v in locals().items()
                                                       if k not in ("self", "__class__")})
        notices = Notices(rank_zero_warn, rank_zero_info)
        self._guard = RunGuard(options.run.on_error, rank_zero_warn, MAX_CONSECUTIVE_FAILURES,
                               options.explaining.batch_size,
                               options.statistics.metric_batch_size)
        self._sinks = PictureSinks(options.pictures, notices, self._guard.progress)
        self._observer = Observer(options, notices, self._sinks, self._guard.progress)
        self._loaded_checkpoint = False
        self._last_run_step: int | None = None  # a fit explains each step once

    def _configure(self, options: CallbackOptions) -> None:
        """Give every collaborator the (validated) options at once."""
        self._options = options
        self._guard.configure(options.run.on_error, options.explaining.batch_size,
                              options.statistics.metric_batch_size)
        self._sinks.configure(options.pictures)
        self._observer.configure(options)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._options.explaining.identity())

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        _refuse_sharded(trainer)
        if self._options.explaining.target_layer is not None:
            resolve_layer(pl_module, self._options.explaining.target_layer)
        self._loaded_checkpoint = False  # a checkpoint, if any, is loaded after setup

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_run_step = self._observer.new_fit(restored=self._loaded_checkpoint)
        self._start(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_before(trainer, pl_module, "validate")

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not api.fitting(trainer):
            self._start(trainer)
            self._check_before(trainer, pl_module, "validate")

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)
        self._check_before(trainer, pl_module, "test")

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        every, step = self._options.run.every_n_steps, trainer.global_step
        if every and step and step % every == 0 and trainer.enable_validation:
            self.log_cams(trainer, pl_module, stage="validate")

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not _should_skip_validation(trainer, self._options.run.every_n_epochs):
            self.log_cams(trainer, pl_module, stage="validate")

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_cams(trainer, pl_module, stage="test")

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self._guard.active:
            with self._guard.attempt("the filmstrip at the end of fit"):
                self.log_filmstrip(trainer)
        scalars: dict[str, float] = {}
        try:
            if trainer.is_global_zero and self._guard.active:
                with preserved_rng_state(pl_module.device), \
                        self._guard.attempt("the sanity check at the end of fit"):
                    result = self.sanity_check(trainer, pl_module)
                    if result is not None:
                        prefix = self._observer.prefix("validate")
                        scalars = {prefix + k: v for k, v in result.scalars().items()}
        finally:  # rank zero's numbers reach callback_metrics on every rank (every rank
            # takes part, also when rank zero raises with on_error="raise")
            api.publish(trainer, api.rank_zero_broadcast(trainer)(scalars))

    def sanity_check(self, trainer: Trainer, pl_module: LightningModule) -> SanityResult | None:
        """Compare the fixed samples' maps with those of the model with its last
        ``sanity_layers`` layers re-initialised (then restored exactly); log
        ``sanity/rank_correlation`` and warn when the maps barely change (rank zero; the
        callback publishes the numbers on every rank at the end of fit)."""
        loaders = api.current_dataloaders(trainer, "validate")
        return self._observer.sanity(pl_module, loaders, _run(trainer, pl_module, "validate"))

    def log_cams(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Explain and log the ``stage``'s samples now; call it on every rank (each takes part
        in the statistics), under the one failure policy. A fit explains a step once."""
        run = _run(trainer, pl_module, stage)
        if (run.extends_history and self._last_run_step == run.step) or not self._guard.agree(
                api.rank_zero_broadcast(trainer)):
            return  # explained at this step already, or switched off (alike on every rank)
        if run.extends_history:
            self._last_run_step = run.step
        shown: dict[str, float] = {}
        with preserved_rng_state(pl_module.device), self._guard.attempt(run.describe()):
            loaders, provisional = api.dataloaders(trainer, stage)
            statistics, stop = self._observer.measure(
                pl_module, loaders, run, collectives=api.collectives(trainer, pl_module))
            if statistics is not None:
                prefix = self._observer.prefix(stage)
                api.publish(trainer, {prefix + k: v for k, v in statistics.scalars.items()})
                trainer.should_stop = trainer.should_stop or stop
            if trainer.is_global_zero:
                shown = self._observer.show(pl_module, loaders, run, statistics,
                                            provisional=provisional)
        # what rank zero logged (drift too) reaches callback_metrics on every rank
        api.publish(trainer, api.rank_zero_broadcast(trainer)(shown))

    def log_filmstrip(self, trainer: Trainer) -> Tensor | None:
        """Log the filmstrip of the runs so far (at the end of fit; rank zero); returns its
        first page as uint8 ``(3, H, W)``, or ``None``."""
        loaders = api.current_dataloaders(trainer, "validate")
        return self._observer.filmstrip(loaders, trainer.global_step) \
            if trainer.is_global_zero else None

    def _check_before(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Fail fast: the whole pipeline once on the fixed samples (rank zero, RNG kept)."""
        if not trainer.is_global_zero:
            return
        run = _run(trainer, pl_module, stage)
        if run.fitting and not trainer.enable_validation:
            self._observer.notices.warn_once(
                "no_validation", "GradCAMCallback: this fit has no validation loop (no "
                "validation data, no validation_step or limit_val_batches=0), so there is "
                "nothing to explain.")
            return
        what = "training" if run.fitting else f"trainer.{stage}()"
        with preserved_rng_state(pl_module.device), _noted(
                f"raised by GradCAMCallback's check of its options on the fixed {stage} "
                f"samples before {what}"):
            loaders, provisional = api.dataloaders(trainer, stage)
            self._observer.check(pl_module, loaders, run, provisional=provisional,
                                 monitors=getattr(trainer, "callbacks", ()),
                                 steps_per_validation=api.steps_per_validation(trainer))

    def _start(self, trainer: Trainer) -> None:
        """A new fit, validate or test: new sinks, failure count and warnings."""
        self._guard.reset()
        self._observer.notices.reset()
        self._sinks.start(trainer.loggers, trainer.default_root_dir)

    @override
    def state_dict(self) -> dict[str, Any]:
        return self._observer.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the layer, samples and history (:mod:`gradcam_callback.checkpoint`)."""
        self._loaded_checkpoint = True
        self._observer.load_state_dict(state_dict)


def _should_skip_validation(trainer: Trainer, every_n_epochs: int) -> bool:
    """The sanity check, and fit's epochs that ``every_n_epochs`` leaves out."""
    return trainer.sanity_checking or (
        api.fitting(trainer) and (trainer.current_epoch + 1) % every_n_epochs != 0)


def _refuse_sharded(trainer: Trainer) -> None:
    strategy = type(trainer.strategy).__name__
    if strategy in _SHARDED_STRATEGIES:
        raise ValueError(
            f"GradCAMCallback does not support {strategy}: its parameters are sharded "
            "across ranks, so rank zero cannot run the model alone. Use strategy='ddp' "
            "(or explain a checkpoint after training with compute_cam)."
        )


def _run(trainer: Trainer, pl_module: LightningModule, stage: str) -> Run:
    return Run(stage, trainer.current_epoch, trainer.global_step, api.fitting(trainer),
               api.model_inputs(trainer, pl_module))


@contextmanager
def _noted(note: str) -> Iterator[None]:
    """Add ``note`` to an exception passing through (Python 3.11+ shows it below it)."""
    try:
        yield
    except Exception as error:
        if hasattr(error, "add_note"):
            error.add_note(note)
        raise


def _option(name: str) -> property:
    def get(self: GradCAMCallback) -> Any:
        return copy.copy(self._options.arguments[name])  # a list read is not the option

    def set_(self: GradCAMCallback, value: Any) -> None:
        self._configure(validated_options(**{**self._options.arguments, name: value}))

    return property(get, set_, doc=f"The ``{name}`` option; setting it validates it and "
                                   "applies it everywhere, or raises and changes nothing.")


# Every constructor argument reads (and sets) as an attribute.
for _name in list(inspect.signature(GradCAMCallback.__init__).parameters)[1:]:
    setattr(GradCAMCallback, _name, _option(_name))

# Read-only views of what the callback holds.
_VIEWS: dict[str, tuple[str, Callable[[GradCAMCallback], Any]]] = {
    "options": ("The validated options, in their groups.", lambda c: c._options),
    "failures": ("The failed runs since the last fit/validate/test started, as reported "
                 "(run, step, error, cause, fix).", lambda c: tuple(c._guard.failures)),
    "switched_off": ("Whether the callback switched itself off after failed runs in a row.",
                     lambda c: c._guard.switched_off),
    "samples": ("The fixed validation samples (indices, inputs, labels, masks), or None "
                "before the first run.", lambda c: c._observer.samples.cached("validate")),
    "history": ("The maps of every logged validation run (epochs, steps, maps).",
                lambda c: c._observer.history),
    "layer_name": ("The layer explained: target_layer, or the one chosen automatically.",
                   lambda c: c._observer.explainer.layer_name),
    "last_metrics": ("The last run's scalars by tag, as logged.",
                     lambda c: c._observer.last_metrics),
    "last_statistics": ("The last run's many-sample statistics, or None.",
                        lambda c: c._observer.statistics.last),
    "last_grid": ("The last grid (its first page), uint8 (3, H, W).",
                  lambda c: c._observer.pictures.last_grid),
    "last_pages": ("The last grid's pages.", lambda c: c._observer.pictures.last_pages),
    "last_class_maps": ("The last class-maps picture.",
                        lambda c: c._observer.pictures.last_class_maps),
    "last_filmstrip": ("The last filmstrip (its first page).",
                       lambda c: c._observer.pictures.last_filmstrip),
}
for _name, (_doc, _read) in _VIEWS.items():
    setattr(GradCAMCallback, _name, property(_read, doc=_doc))
