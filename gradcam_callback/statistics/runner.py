"""The statistics of a run, as the callback runs them: on every rank, then alarms and advice.

:class:`StatisticsRunner` explains the metric samples with the callback's
:class:`~gradcam_callback.explainer.Explainer` (the same layer, reading and target as the
pictures), reads them with its :class:`~gradcam_callback.samples.SampleStore` (the same
reader and the same warnings), and hands the result to the callback, which publishes it.
It also sounds the alarms, names the scalars that are undefined this time, and, when the
layer's maps are too coarse for region metrics, names an earlier layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gradcam_callback.engine.layers import earlier_spatial_layer
from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.engine.targets import logits_from_output
from gradcam_callback.explainer import Explained, Explainer
from gradcam_callback.faithfulness import Faithfulness
from gradcam_callback.notices import Notices
from gradcam_callback.options import StatisticsOptions
from gradcam_callback.samples import FixedSamples, SampleStore, dataset_size
from gradcam_callback.statistics.accumulator import MIN_CELLS, StatisticsResult
from gradcam_callback.statistics.alarms import check_alarms
from gradcam_callback.statistics.collect import (
    Chunk,
    Collectives,
    ExplainChunk,
    collect_statistics,
)

__all__ = ["StatisticsRunner"]

Prepare = Callable[[Tensor], Tensor]
"""CPU inputs -> model inputs (the model's device and precision)."""


@dataclass
class StatisticsRunner:
    """Run the many-sample statistics with the callback's options.

    Attributes:
        options: the statistics options (how many samples, chunk size, alarms).
        notices: where alarms, advice and undefined numbers are said.
        last: the last run's result (``callback.last_statistics``).
    """

    options: StatisticsOptions = field(default_factory=StatisticsOptions)
    notices: Notices = field(default_factory=Notices)
    last: StatisticsResult | None = None

    @property
    def enabled(self) -> bool:
        return self.options.metric_samples > 0

    def run(self, model: nn.Module, explainer: Explainer, store: SampleStore, loaders: Any,
            stage: str, prepare: Prepare, *,
            collectives: Collectives | None = None) -> StatisticsResult:
        """This rank's share of the first ``metric_samples`` samples of the ``stage``'s
        loader among ``loaders``, added up over all ranks (every rank must call it, and
        every rank takes part in the collectives even if its own part fails)."""
        rank, world_size = (collectives.rank, collectives.world_size) if collectives else (0, 1)
        chunks, indices, failure = None, range(0), None
        try:
            loader = store.loader_for(stage, loaders)
            total = dataset_size(loader.dataset, self.options.metric_samples)
            chunks = self._explain_chunk(model, explainer, store, loader, stage, prepare,
                                         self.options.faithfulness_samples)
            indices = range(rank, total, world_size)
        except Exception as error:  # the other ranks must hear of it before any sum
            failure = error
        self.last = collect_statistics(chunks, indices, chunk_size=self.options.metric_batch_size,
                                       collectives=collectives, failure=failure)
        return self.last

    def check(self, model: nn.Module, explainer: Explainer, store: SampleStore,
              loader: DataLoader, stage: str, prepare: Prepare
              ) -> tuple[StatisticsResult | None, bool]:
        """Fail fast: the statistics on their first chunk, this rank alone, nothing kept.
        Returns them, and whether that chunk was all of the metric samples."""
        total = dataset_size(loader.dataset, self.options.metric_samples)
        if not total:
            return None, True
        chunk = min(total, self.options.metric_batch_size)
        result = collect_statistics(self._explain_chunk(model, explainer, store, loader,
                                                        stage, prepare,
                                                        self.options.faithfulness_samples),
                                    range(chunk), chunk_size=self.options.metric_batch_size)
        return result, chunk == total

    def sound_alarms(self, result: StatisticsResult, *, epoch: int, step: int) -> bool:
        """Say the alarms that fire; whether training should stop."""
        return check_alarms(self.options.alarms, result.scalars, self.notices, epoch=epoch,
                            step=step, stop=self.options.alarm_action == "stop",
                            undefined=result.undefined)

    def report_undefined(self, undefined: dict[str, str], prefix: str, *, epoch: int) -> None:
        """Name, once each, the scalars left out this run because they are undefined (a
        scalar and its spreads in one line when they share the cause)."""
        groups: dict[tuple[str, str], list[str]] = {}
        for name, cause in undefined.items():
            base = name.removesuffix("_std").removesuffix("_ci95")
            groups.setdefault((base, cause), []).append(prefix + name)
        for (base, cause), names in groups.items():
            which = names[0] if len(names) == 1 else (", ".join(names[:-1])
                                                       + f" and {names[-1]}")
            self.notices.warn_once(
                f"undefined_{base}_{cause}",
                f"GradCAMCallback: {which} {'is' if len(names) == 1 else 'are'} undefined at "
                f"epoch {epoch}: {cause}. Left out of callback_metrics and the loggers for "
                "that run (callback_metrics keeps the last defined value), never logged as "
                "NaN.")

    def advise_on_coarse_maps(self, model: nn.Module, result: StatisticsResult,
                              samples: FixedSamples, layer_name: str | None,
                              prepare: Prepare) -> None:
        """Warn once when the layer's maps have fewer than 4 cells a side, naming an
        earlier layer with enough of them (one probe forward on one sample)."""
        coarse = any(cells < MIN_CELLS and size > cells  # (a thin volume's few slices: no)
                     for cells, size in zip(result.layer_size, result.input_size,
                                            strict=False))
        if (not result.count or not coarse or layer_name is None
                or not self.notices.first("coarse")):  # once, even if the probe fails
            return
        earlier = earlier_spatial_layer(model, prepare(samples.inputs[:1]), layer_name,
                                        MIN_CELLS)
        self.notices.warn(
            f"GradCAMCallback: layer {layer_name!r} gives {_sides(result.layer_size)} maps "
            f"for {_sides(result.input_size)} inputs: too coarse for "
            f"border_lift, lift and pointing_game (one cell covers {result.cell_pixels} px, "
            "so they barely move between epochs). Explain an earlier layer"
            + (f", e.g. target_layer={earlier!r}." if earlier else "."))

    @staticmethod
    def _explain_chunk(model: nn.Module, explainer: Explainer, store: SampleStore,
                       loader: DataLoader, stage: str, prepare: Prepare,
                       faithfulness_samples: int = 0) -> ExplainChunk:
        def explain_chunk(indices: list[int]) -> Chunk:
            samples = store.read(loader, indices, stage)
            explained = explainer.explain(model, prepare(samples.inputs), samples.labels,
                                          label_note=samples.label_note,
                                          indices=samples.indices, primary_only=True)
            return Chunk(samples, explained,
                         faithfulness_values(model, explainer, samples, explained, prepare,
                                             faithfulness_samples))

        return explain_chunk


def faithfulness_values(model: nn.Module, explainer: Explainer, samples: FixedSamples,
                        explained: Explained, prepare: Prepare, limit: int
                        ) -> dict[str, Tensor]:
    """``faithfulness/<name>`` per sample ``(N,)`` for the samples of dataset index below
    ``limit`` whose outputs are finite (NaN for the others: left out of the means); ``{}``
    when none is measured. The model runs in eval mode, without gradients, its RNG states
    kept (:mod:`gradcam_callback.faithfulness`)."""
    chosen = [i for i, index in enumerate(samples.indices)
              if index < limit and bool(explained.finite[i])]
    if not chosen or explained.explained is None:
        return {}
    rows = torch.tensor(chosen)
    transform = explainer.options.output_transform

    def forward(inputs: Tensor) -> Tensor:
        prepared = prepare(inputs)
        with torch.no_grad(), eval_mode(model), preserved_rng_state(prepared.device):
            return logits_from_output(model(prepared), transform).detach().float().cpu()

    masks = {name: mask[rows] for name, mask in {**samples.masks, **explained.regions}.items()}
    measured = Faithfulness().measure(
        forward, samples.inputs[rows], explained.maps[rows], explained.layer_size,
        explained.task, explained.logits[rows], explained.explained[rows],
        [samples.indices[i] for i in chosen], masks)
    values = {}
    for name, part in measured.items():
        full = torch.full((len(samples.indices),), float("nan"), dtype=torch.float64)
        full[rows] = part.double()
        values[f"faithfulness/{name}"] = full
    return values



def _sides(size: tuple[int, ...]) -> str:
    """``"4x4"``; ``"12 steps"`` for a signal."""
    return f"{size[0]} steps" if len(size) == 1 else "x".join(str(side) for side in size)
