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
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradcam_callback import _checks
from gradcam_callback.engine import explain_batch, get_method, resolve_layer
from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.engine.transforms import check_reading
from gradcam_callback.lightning.display import Display, choose_display
from gradcam_callback.lightning.guard import (
    MAX_CONSECUTIVE_FAILURES,
    ON_ERROR,
    Attempt,
    NonFiniteOutputError,
    RunGuard,
)
from gradcam_callback.lightning.history import STATE_VERSION, History, evenly_spaced
from gradcam_callback.lightning.samples import (
    FixedSamples,
    SampleReader,
    current_dataloaders,
    requested_dataloaders,
)
from gradcam_callback.lightning.sinks import FileSink, ImageSink, image_sinks
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
    colormap_lut,
    encode_gif,
    encode_image,
    explanation_grid,
    filmstrip,
    filmstrip_frames,
    prediction_captions,
    resize_tiles,
    run_header,
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
        reshape_transform: how to read the layer's output as maps: ``"auto"`` (channels-
            first, channels-last or ViT tokens with any number of class/register tokens,
            recognised from the shape and the input size), ``"nchw"``, ``"nhwc"``,
            ``"tokens"`` (alias ``"vit"``), ``"tokens:<n>"`` for ``n`` prefix tokens, or a
            callable ``output -> (N, C, h, w)``.
        output_transform: picks the logits out of a model output that is not a tensor.
        mask_keys: keys of dict batches holding region masks ``(N, H, W)`` (or
            ``(N, 1, H, W)``) to measure CAM energy in; ``None`` takes every key ending in
            ``"_mask"`` that holds such a mask (others are skipped with one warning). A soft
            mask counts a pixel as inside where its value is above 0.5, everywhere.
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
        batch_size: explain at most this many samples per forward pass.
        samples_per_page: at most this many samples in one picture; more are split into
            pages ``<tag>/page_<k>`` (``k`` from 1).
        on_error: after the check before training, ``"warn"`` reports a failed run once
            and goes on (switching off after 3 failed runs in a row); ``"raise"`` raises.
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
        colormap_lut(_checks.check_str("colormap", colormap))  # with the closest names
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
        self.batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
        self.samples_per_page = _checks.check_int("samples_per_page", samples_per_page,
                                                  minimum=1)
        self.on_error = _checks.check_choice("on_error", on_error, ON_ERROR)
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
        self.last_filmstrip: Tensor | None = None
        self._history = History()
        self._samples: dict[str, FixedSamples] = {}
        self._restored_indices: list[int] | None = None
        self._layer_name: str | None = target_layer
        self._reading: str | None = None
        self._sinks: list[ImageSink] | None = None  # chosen at the first picture of a run
        self._dataset_class_names: list[str] | None = None
        self._warned: set[str] = set()
        self.last_pages: list[Tensor] = []
        self._guard = RunGuard(self.on_error, rank_zero_warn, MAX_CONSECUTIVE_FAILURES,
                               self.batch_size)
        self._attempt: Attempt | None = None
        self._sources: dict[str, tuple[Any, Any, bool]] = {}
        self._loaded_checkpoint = False

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

    @property
    def failures(self) -> tuple[Any, ...]:
        """The failed runs since the last ``fit``/``validate``/``test`` started, as reported
        (:class:`~gradcam_callback.lightning.guard.Failure`: run, step, error, cause, fix)."""
        return tuple(self._guard.failures)

    @property
    def switched_off(self) -> bool:
        """Whether the callback switched itself off after failed runs in a row."""
        return self._guard.switched_off

    def _start_run(self, trainer: Trainer) -> None:
        """A new fit, validate or test: new sinks and failure count. (Samples are read
        again when the loop's dataloader is another one: see :meth:`_fixed_samples`.)"""
        self._guard.reset()
        self._sinks = None  # chosen at the run's first picture

    def _check_before(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Fail fast: the whole pipeline once on the fixed samples, nothing logged.

        Rank zero only, no collective; the RNG states are restored. Errors propagate,
        with a note saying where they come from.
        """
        if not trainer.is_global_zero:
            return
        fitting = trainer.state.fn == "fit"
        if fitting and not trainer.enable_validation:
            self._warn_once("no_validation", "GradCAMCallback: this fit has no validation "
                            "loop (no validation data, no validation_step or "
                            "limit_val_batches=0), so there is nothing to explain.")
            return
        what = "training" if fitting else f"trainer.{stage}()"
        with preserved_rng_state(pl_module.device), _noted(
                f"raised by GradCAMCallback's check of its options on the fixed {stage} "
                f"samples before {what}"):
            loaders = current_dataloaders(trainer, stage)
            provisional = loaders is None and fitting
            if provisional:  # no sanity check has loaded them: ask where Lightning will
                loaders = requested_dataloaders(trainer)
            samples = self._fixed_samples(trainer, stage, loaders, provisional=provisional)
            rows, logits = self._explain_samples(trainer, pl_module, samples)
            captions, wrong = prediction_captions(logits.cpu(), samples.labels,
                                                  self._class_names)
            for page in self._grid_pages(samples, rows, captions, wrong, limit=1):
                encode_image(page, self.image_format)
            self._measure(rows[0][1].cpu(), samples.masks)
            if fitting:
                self._check_filmstrip(samples, rows[0][1])

    def _check_filmstrip(self, samples: FixedSamples, cams: Tensor) -> None:
        """The filmstrip's first page, at its widest (``filmstrip_max`` runs), encodes."""
        maps = cams.detach().float().cpu()[None].expand(self.filmstrip_max, -1, -1, -1)
        titles = [f"epoch {i}" for i in range(self.filmstrip_max)]
        for page in self._filmstrip_pages(samples, maps, titles, limit=1):
            check_picture_size(page.shape[1], page.shape[2], self.image_format,
                               "the filmstrip", f"lower filmstrip_max (now "
                               f"{self.filmstrip_max}) or max_image_size")
            encode_image(page, self.image_format)

    def _guarded(self, trainer: Trainer, run: str, work: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> None:
        """Run ``work`` under the failure policy (rank zero; skipped once switched off)."""
        if not trainer.is_global_zero or not self._guard.active:
            return
        with self._guard.attempt(run) as attempt:
            self._attempt = attempt
            try:
                work(*args, **kwargs)
            finally:
                self._attempt = None

    def _progress(self, step: str, where: str = "") -> None:
        """Say what the guarded run is doing now (named in its report if it fails)."""
        if self._attempt is not None:
            self._attempt.step, self._attempt.where = step, where

    @staticmethod
    def _run_name(trainer: Trainer, stage: str) -> str:
        if trainer.state.fn == "fit":
            return f"the run at epoch {trainer.current_epoch} (step {trainer.global_step})"
        return f"the {stage} run (step {trainer.global_step})"

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

    def _statistics_on_every_rank(self, trainer: Trainer, pl_module: LightningModule,
                                  stage: str) -> StatisticsResult | None:
        """:meth:`_attention_statistics`, or ``None`` (reported once) if it fails.

        Every rank runs it whatever the failure policy says on rank zero, so that every
        rank takes part in its collectives.
        """
        try:
            return self._attention_statistics(trainer, pl_module, stage)
        except Exception as error:
            if self.on_error == "raise":
                raise
            self._warn_once("statistics_failed", f"GradCAMCallback: the many-sample statistics "
                            f"failed ({type(error).__name__}: {error}); the scalars of this "
                            "run come from the samples shown. Set metric_samples=0 to turn "
                            "them off.")
            return None

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

    def _explain_samples(self, trainer: Trainer, pl_module: LightningModule,
                         samples: FixedSamples) -> tuple[list[tuple[str, Tensor]], Tensor]:
        """:meth:`_explain` on the fixed samples, on the model's device and precision.

        Raises:
            NonFiniteOutputError: the model's outputs for some samples are NaN or infinite.
        """
        inputs = trainer.precision_plugin.convert_input(samples.inputs.to(pl_module.device))
        rows, logits = self._explain(pl_module, inputs, samples.labels, samples.label_note)
        finite = torch.isfinite(logits.detach().float().flatten(1)).all(dim=1)
        if not finite.all():
            bad = [samples.indices[i] for i in (~finite).nonzero().flatten().tolist()]
            raise NonFiniteOutputError(
                f"the model's outputs for samples {bad[:8]}{'...' if len(bad) > 8 else ''} "
                "are NaN or infinite"
            )
        return rows, logits

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

    def _explain(self, pl_module: LightningModule, inputs: Tensor, labels: Tensor | None,
                 label_note: str | None = None) -> tuple[list[tuple[str, Tensor]], Tensor]:
        """The maps to show, each with its row title, and the logits of the forward pass."""
        common = {"method": self.method, "reshape_transform": self.reshape_transform,
                  "output_transform": self.output_transform, "batch_size": self.batch_size}
        title = get_method(self.method).title
        primary = "predicted" if self.target == "both" else self.target
        result = explain_batch(pl_module, inputs, self._layer_name,
                               self._targets(primary, labels, label_note), **common)
        if self._reading is None:
            chosen = "chosen automatically" if self.target_layer is None else "target_layer"
            rank_zero_info(f"GradCAMCallback: explaining {result.layer_name!r} ({chosen}): "
                           f"{result.reading}")
        self._layer_name, self._reading = result.layer_name, result.reading
        if self.target != "both":
            suffix = " (label)" if self.target == "label" else ""
            return [(title + suffix, result.cams)], result.logits
        by_label = explain_batch(pl_module, inputs, self._layer_name,
                                 self._targets("label", labels, label_note), **common)
        return [(f"{title} (predicted)", result.cams), (f"{title} (label)", by_label.cams)], \
            result.logits

    def _targets(self, target: Any, labels: Tensor | None, label_note: str | None = None) -> Any:
        if target == "predicted":
            return None
        if target == "label":
            if labels is None and label_note is not None:
                raise ValueError(
                    f"target={self.target!r} needs class-index labels (a 1-D integer tensor "
                    f"(N,)), but {label_note}: convert them in the dataset (e.g. "
                    "labels.argmax(1) for one-hot), or return (inputs, class indices) from "
                    "batch_to_input"
                )
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
        """The samples as float RGB in ``[0, 1]`` at input size (pages resize their tiles),
        undoing the dataset's normalisation when it is known, else scaled jointly."""
        display = self._display or Display(self.mean, self.std, joint=self.mean is None,
                                           source="")
        return to_display(samples.inputs, display.mean, display.std, joint=display.joint)

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

    def _fixed_samples(self, trainer: Trainer, stage: str, loaders: Any = None, *,
                       provisional: bool = False) -> FixedSamples:
        """The ``stage``'s fixed samples, read once and again only when its loader changes.

        ``loaders`` default to those the running loop has loaded. Samples read from
        loaders requested before the loop loaded its own (``provisional``) are kept when
        the loop's loader reads the same dataset; any other new loader (reloaded
        dataloaders, another datamodule) is read again.
        """
        if loaders is None:
            loaders = current_dataloaders(trainer, stage)
        cached = self._samples.get(stage)
        if loaders is None and cached is not None:
            return cached
        loader = self._reader.dataloader(loaders, stage)
        dataset = getattr(loader, "dataset", None)
        if cached is not None and stage in self._sources:
            old_loader, old_dataset, was_provisional = self._sources[stage]
            if old_loader is loader or (was_provisional and old_dataset is dataset):
                self._sources[stage] = (loader, dataset, provisional)
                return cached
        wanted = self._reader.wanted_indices()
        if stage == "validate" and self._restored_indices is not None:
            wanted = self._restored_indices
        self._samples[stage] = self._reader.read(loader, wanted, stage, self._warn_once)
        self._sources[stage] = (loader, dataset, provisional)
        self._dataset_class_names = _names_of(dataset)
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
            self._progress("writing", sink.describe())
            sink.log_image(tag, picture, trainer.global_step, caption)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _sample_options(self) -> dict[str, Any]:
        """The options that choose the fixed samples, as checkpointed."""
        reader = self._reader
        return {"num_samples": reader.num_samples, "dataloader_idx": reader.dataloader_idx,
                "sample_indices": (None if reader.sample_indices is None
                                   else list(reader.sample_indices))}

    @override
    def state_dict(self) -> dict[str, Any]:
        samples = self._samples.get("validate")
        indices = samples.indices if samples is not None else self._restored_indices
        return {"layer_name": self._layer_name, "sample_indices": indices,
                "sample_options": self._sample_options(), **self._history.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the layer, the samples shown and the drift history from a checkpoint.

        The checkpoint's samples are kept unless the sample options changed since: then the
        new options win (one warning names old and new) and the history restarts. A
        history that cannot be restored is dropped with a warning, never an error.
        """
        self._loaded_checkpoint = True
        self._samples.clear()
        self._sources.clear()
        version = state_dict.get("version", 1)
        if isinstance(version, int) and version > STATE_VERSION:
            self._warn_once("state_version", f"GradCAMCallback: the checkpoint's state has "
                            f"version {version}, newer than this version's {STATE_VERSION}; "
                            "restoring what this version understands.")
        self._layer_name = state_dict.get("layer_name", self._layer_name)
        try:
            self._history.load_state_dict(state_dict)
        except ValueError as error:
            self._warn_once("bad_history", f"GradCAMCallback: {error}; starting a new drift "
                            "history.")
        indices = state_dict.get("sample_indices")
        saved = state_dict.get("sample_options")
        self._restored_indices = list(indices) if indices is not None else None
        if saved is not None and saved != self._sample_options():
            changed = ", ".join(f"{key}={saved.get(key)!r} -> {value!r}"
                                for key, value in self._sample_options().items()
                                if saved.get(key) != value)
            self._warn_once("options_changed", f"GradCAMCallback: the sample options changed "
                            f"since the checkpoint ({changed}); the new ones win: showing "
                            f"other samples than before the resume (then: indices {indices}) "
                            "and starting a new drift history.")
            self._restored_indices = None
            self._history.clear()


@contextmanager
def _noted(note: str) -> Iterator[None]:
    """Add ``note`` to an exception passing through (Python 3.11+ shows it below it)."""
    try:
        yield
    except Exception as error:
        if hasattr(error, "add_note"):
            error.add_note(note)
        raise


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
    if (_checks.is_number(target) and math.isfinite(target)  # type: ignore[arg-type]
            and float(target) == int(target) and int(target) >= 0):  # type: ignore[arg-type]
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
