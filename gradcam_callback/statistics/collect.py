"""The statistics' chunk loop: explain a rank's share of the metric samples a chunk at a
time, fold each chunk into the running sums, add the sums up across ranks.

Every rank explains its share of the first ``metric_samples`` validation samples (rank
``r`` takes indices ``r, r + world, ...``), ``chunk_size`` at a time; a chunk is let go
before the next is read, so memory is one chunk. Samples whose outputs are not finite are
left out. Then the ranks agree on whether any of them failed (one collective) and add
their sums (:meth:`~.accumulator.AttentionStatistics.reduce`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gradcam_callback.explainer import Explained
from gradcam_callback.samples import FixedSamples
from gradcam_callback.statistics.accumulator import (
    AttentionStatistics,
    Broadcast,
    Reduce,
    StatisticsResult,
    agree,
)
from gradcam_callback.tasks import Grouping

__all__ = ["Chunk", "Collectives", "ExplainChunk", "collect_statistics"]


@dataclass(frozen=True)
class Chunk:
    """One chunk explained: the samples read, their explanation, and per-sample values
    measured beside it (``faithfulness/...``: ``(N,)``, NaN where not measured)."""

    samples: FixedSamples
    explained: Explained
    values: dict[str, Tensor] = field(default_factory=dict)


ExplainChunk = Callable[[list[int]], "Chunk | tuple[FixedSamples, Explained]"]
"""``dataset indices -> the chunk explained`` (a :class:`Chunk`, or ``(samples,
explanation)``)."""


@dataclass(frozen=True)
class Collectives:
    """How the ranks talk: ``reduce_sum`` adds a tensor over all ranks, ``broadcast``
    sends one rank's object (``broadcast(obj, src)``) to every rank; tensors live on
    ``device`` (NCCL: the GPU); this rank is ``rank`` of ``world_size``."""

    reduce_sum: Reduce
    broadcast: Broadcast
    device: torch.device | str = "cpu"
    rank: int = 0
    world_size: int = 1


def collect_statistics(explain_chunk: ExplainChunk | None, indices: Sequence[int], *,
                       chunk_size: int = 64, collectives: Collectives | None = None,
                       failure: Exception | None = None) -> StatisticsResult:
    """Explain ``indices`` (this rank's share) in chunks and return the all-rank statistics.

    Args:
        explain_chunk: reads and explains a few samples (see :data:`ExplainChunk`).
        indices: the dataset indices this rank explains (may be empty).
        chunk_size: samples per read and per forward pass.
        collectives: how to add up across ranks; ``None`` on one process (or when one
            rank runs alone, as in the check before training).
        failure: what already failed on this rank before any chunk (finding the loader):
            it is raised, after the ranks agree, as if a chunk had raised it.

    Returns:
        The statistics, the same on every rank.

    Raises:
        Exception: what failed on this rank, or
            :class:`~.accumulator.RankFailed` on a rank whose own part worked while
            another's failed. With ``collectives``, every rank first takes part in one
            collective that tells whether any rank failed, so all ranks raise together
            and none waits for a rank that gave up.
    """
    statistics = AttentionStatistics()
    if failure is None and explain_chunk is not None:
        try:
            for start in range(0, len(indices), chunk_size):
                chunk = explain_chunk(list(indices[start : start + chunk_size]))
                if not isinstance(chunk, Chunk):
                    chunk = Chunk(*chunk)
                _fold(statistics, chunk.samples, chunk.explained, chunk.values)
        except Exception as error:  # every rank must hear of it before any sum
            failure = error
    if collectives is None:
        if failure is not None:
            raise failure
        statistics.reduce(lambda t: t, lambda obj, src: obj)
        return statistics.result()
    # Before any sum, the ranks agree on whether all of them got this far: a rank whose own
    # part failed must not leave the others waiting in a collective it never joins.
    agree(failure, collectives.reduce_sum, collectives.device)
    statistics.reduce(collectives.reduce_sum, collectives.broadcast, collectives.device,
                      rank=collectives.rank, world_size=collectives.world_size)
    return statistics.result()


def _fold(statistics: AttentionStatistics, samples: FixedSamples, explained: Explained,
          values: dict[str, Tensor] | None = None) -> None:
    """One chunk into the sums, without the samples whose outputs are not finite (the
    chunk is let go on return: memory is one chunk, not two)."""
    keep = explained.finite
    for name, per_sample in (values or {}).items():
        statistics.add_values(name, per_sample[keep])
    masks = {**samples.masks, **explained.regions}  # with the regions the labels give
    grouping = explained.grouping()
    if bool(keep.all()):  # the usual case: no copies
        statistics.update(explained.maps, explained.layer_size, samples.inputs,
                          explained.logits, explained.labels, masks, grouping=grouping)
    elif bool(keep.any()):
        kept = Grouping(grouping.count, grouping.predicted[keep], grouping.by_prediction[keep],
                        None if grouping.by_label is None else grouping.by_label[keep])
        statistics.update(explained.maps[keep], explained.layer_size, samples.inputs[keep],
                          explained.logits[keep], None,
                          {name: mask[keep] for name, mask in masks.items()}, grouping=kept)
