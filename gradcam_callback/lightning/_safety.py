"""The callback's safety: fail fast before training, then never stop it.

The check before the first step (and before ``validate``/``test``) and the failure policy
around each run. A part of :class:`~gradcam_callback.lightning.callback.GradCAMCallback`,
split out by concern; the policy itself lives in :mod:`.guard`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from gradcam_callback.engine.scopes import preserved_rng_state
from gradcam_callback.lightning.samples import (
    FixedSamples,
    current_dataloaders,
    requested_dataloaders,
)
from gradcam_callback.render import (
    encode_image,
    prediction_captions,
)
from gradcam_callback.render.pages import (
    check_picture_size,
)


class SafetyMixin:
    """The check before training and the failure policy around each run."""

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
            self._check_statistics(trainer, pl_module, stage, loaders)
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


@contextmanager
def _noted(note: str) -> Iterator[None]:
    """Add ``note`` to an exception passing through (Python 3.11+ shows it below it)."""
    try:
        yield
    except Exception as error:
        if hasattr(error, "add_note"):
            error.add_note(note)
        raise
