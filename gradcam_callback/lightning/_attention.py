"""The callback's numbers: many-sample statistics on every rank, ``callback_metrics``,
alarms, and the warnings about coarse maps and empty masks.

A part of :class:`~gradcam_callback.lightning.callback.GradCAMCallback`, split out by
concern; the formulas live in :mod:`gradcam_callback.metrics` and :mod:`.statistics`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.lightning.display import choose_display
from gradcam_callback.lightning.samples import (
    FixedSamples,
)
from gradcam_callback.lightning.statistics import (
    MIN_CELLS,
    StatisticsResult,
    collect_statistics,
    earlier_layer,
)
from gradcam_callback.metrics import attention_scalars


class AttentionMixin:
    """Scalars of a run: statistics, publishing to Lightning, alarms, warnings."""

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
        with preserved_rng_state(pl_module.device):
            result, layer_name = self._collect(trainer, pl_module, loader, stage,
                                               range(trainer.global_rank, total,
                                                     trainer.world_size), collectives=True)
        self._layer_name = layer_name or self._layer_name
        self.last_statistics = result
        if trainer.is_global_zero:
            try:  # advice only: a failure here must not skip this rank's alarms
                self._warn_if_coarse(pl_module, result, loader, stage)
            except Exception as error:
                self._warn_once("coarse_failed", f"GradCAMCallback: could not look for an "
                                f"earlier layer ({type(error).__name__}: {error}).")
        prefix = f"gradcam/{self._layer_name}/" + ("" if stage == "validate" else f"{stage}/")
        self._publish(trainer, pl_module, prefix, result.scalars)
        self._check_alarms(trainer, result.scalars)
        return result

    def _check_statistics(self, trainer: Trainer, pl_module: LightningModule, stage: str,
                          loaders: Any) -> None:
        """Fail fast: the statistics on their first chunk, before the first training step
        (rank zero, no collective, nothing published); errors propagate."""
        if not self.metric_samples:
            return
        loader = self._reader.dataloader(loaders, stage)
        total = _dataset_size(loader.dataset, self.metric_samples)
        if total:
            self._collect(trainer, pl_module, loader, stage,
                          range(min(total, self.metric_batch_size)), collectives=False)

    def _collect(self, trainer: Trainer, pl_module: LightningModule, loader: Any, stage: str,
                 indices: Sequence[int], collectives: bool) -> tuple[StatisticsResult,
                                                                    str | None]:
        """:func:`collect_statistics` on ``indices`` of ``loader``'s dataset, with the
        strategy's collectives (every rank must call it) or without (one rank alone)."""
        primary = "predicted" if self.target == "both" else self.target

        def read_chunk(indices: Sequence[int]) -> tuple[Tensor, Tensor | None,
                                                         dict[str, Tensor]]:
            chunk = self._reader.read(loader, indices, stage, self._warn_once)
            self._warn_empty_masks(chunk)
            return chunk.inputs, chunk.labels, chunk.masks

        device = pl_module.device
        return collect_statistics(
            pl_module, read_chunk, indices, self._layer_name,
            targets=lambda labels: self._targets(primary, labels),
            chunk_size=self.metric_batch_size,
            explain_options={"method": self.method,
                             "reshape_transform": self.reshape_transform,
                             "output_transform": self.output_transform},
            reduce_sum=(lambda t: trainer.strategy.reduce(t, reduce_op="sum"))
            if collectives else None,
            broadcast=(lambda obj: trainer.strategy.broadcast(obj, src=0))
            if collectives else None,
            device=device,
            prepare=lambda x: trainer.precision_plugin.convert_input(x.to(device)))

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
                        loader: Any, stage: str) -> None:
        height, width = result.layer_size
        if min(height, width) >= MIN_CELLS or "coarse" in self._warned:
            return
        inputs = self._reader.read(loader, [0], stage, self._warn_once).inputs
        inputs = inputs.to(pl_module.device)
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


def _dataset_size(dataset: Any, limit: int) -> int:
    """How many metric samples a dataset gives: ``limit`` capped at its length (an
    iterable dataset without a length is taken at its word)."""
    try:
        return min(limit, len(dataset))
    except TypeError:
        return limit
