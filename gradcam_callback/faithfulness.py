"""Is the hot region what the model uses? Deletion against chance, insertion, the cue
removed: the causal side of the maps, measured while the model trains.

Lift says *where* a map sits; these numbers say whether the model's decision depends on
that place. Each perturbs the inputs and reads the probability ``p`` of what the map
explains (the class, side or label: :func:`explained_probability`) from one more
forward pass, in eval mode and without gradients:

- **deletion** ``deletion/<q>``: ``p`` of the input minus ``p`` with the map's top ``q``
  (10, 25, 50%) of the positions replaced by the *baseline*;
- **random deletion** ``random_deletion/<q>``: the same with random cells of the layer's
  grid covering the same share (seeded per sample: the same cells every run);
- ``deletion_vs_random``: mean deletion ÷ mean random deletion over the three shares.
  Above 1 the map finds what the model uses; 1 is chance; no reference run needed;
- ``deletion_auc`` and ``insertion_auc``: the area under ``p`` as the top 0, 10, 25, 50,
  100% of the map is deleted (low: faithful), or inserted into the baseline (high:
  faithful), trapezoids over the share (the shares of deletion against chance, so 11
  forward passes a sample in all, plus one per mask);
- ``average_drop`` and ``increase_in_confidence`` (torch-cam's definitions, in percent):
  the input multiplied by the map; ``100 * max(0, p - p_masked) / p`` and
  ``100 * [p_masked > p]``;
- ``mask_deletion/<mask>``: ``p`` minus ``p`` with the region removed: the causal
  version of lift ("removing the watermark costs the model 0.6 of its confidence").

The **baseline** that replaces a removed region is the sample's own mean, per channel
(:func:`mean_baseline`): the region keeps the image's average colour and loses all its
content. A blur would not do: a blur coarse enough to erase detail keeps the colour of
a patch as large as its cells (a corner watermark, a marker), which is exactly the cue
to remove.

Nothing here imports Lightning or knows the trainer: a ``forward`` (CPU inputs -> the
model's output on the CPU) comes in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam_callback.engine.targets import class_logits, one_logit, resize_region
from gradcam_callback.ops import resize_maps
from gradcam_callback.tasks import Task

__all__ = ["CURVE", "SHARES", "SHARE_NAMES", "Faithfulness", "deletion_vs_random",
           "explained_probability", "mean_baseline", "random_cells", "top_share"]

SHARES = (0.1, 0.25, 0.5)
"""The shares of the input deleted for deletion against chance."""
SHARE_NAMES = tuple(f"{round(share * 100)}" for share in SHARES)
"""Their names in the scalars (``deletion/10``, ...)."""
CURVE = (0.0, 0.1, 0.25, 0.5, 1.0)
"""The shares of the deletion and insertion curves."""

Forward = Callable[[Tensor], Tensor]
"""CPU inputs -> the model's output (logits) on the CPU, in eval mode, without gradients."""


def mean_baseline(inputs: Tensor) -> Tensor:
    """The inputs ``(N, C, *S)`` with every position replaced by the sample's own mean of
    each channel: a region "removed" keeps the image's average colour and loses all its
    content, whatever its size.

    Example::

        >>> x = torch.zeros(1, 1, 4, 4); x[..., :2] = 1.0
        >>> mean_baseline(x).unique().tolist()
        [0.5]
    """
    dims = tuple(range(2, inputs.dim()))
    return inputs.float().mean(dim=dims, keepdim=True).expand_as(inputs).to(inputs.dtype)


def top_share(maps: Tensor, share: float) -> Tensor:
    """Bool ``(N, *S)``: each map's ``round(share * positions)`` highest positions (ties
    by position order).

    Example::

        >>> top_share(torch.tensor([[0.1, 0.9, 0.5, 0.2]]), 0.5).tolist()
        [[False, True, True, False]]
    """
    flat = maps.detach().float().flatten(1)
    k = round(share * flat.shape[1])
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        chosen.scatter_(1, flat.topk(k, dim=1).indices, True)
    return chosen.view(maps.shape)


def random_cells(indices: list[int], size: tuple[int, ...], cells: tuple[int, ...],
                 share: float) -> Tensor:
    """Bool ``(N, *size)``: per sample, random cells of a grid ``cells`` (the layer's)
    covering ``share`` of it (at least one), enlarged to ``size`` (nearest). Seeded by
    each sample's dataset index: the same cells every run and on every rank.

    Example::

        >>> mask = random_cells([0, 1], (8, 8), (4, 4), 0.25)
        >>> mask.shape, mask.float().mean(dim=(1, 2)).tolist()
        (torch.Size([2, 8, 8]), [0.25, 0.25])
    """
    count = 1
    for side in cells:
        count *= int(side)
    k = max(1, round(share * count))
    grids = []
    for index in indices:
        generator = torch.Generator().manual_seed(1_000_003 * int(index) + 17)
        grid = torch.zeros(count)
        grid[torch.randperm(count, generator=generator)[:k]] = 1.0
        grids.append(grid.view(*cells))
    stacked = torch.stack(grids)
    return F.interpolate(stacked[:, None], size=size, mode="nearest")[:, 0] > 0.5


def explained_probability(task: Task, logits: Tensor, explained: Tensor) -> Tensor | None:
    """``(N,)`` the probability of what each map explains: the softmax of the class
    (multiclass), the sigmoid of the label (multilabel) or of the side (binary: ``z`` for
    1, ``-z`` for 0), the mean softmax of the class over the pixels (segmentation);
    ``None`` for regression (no probability).

    Example::

        >>> p = explained_probability(Task("binary"), torch.tensor([[2.0], [2.0]]),
        ...                           torch.tensor([1, 0]))
        >>> [round(v, 3) for v in p.tolist()]
        [0.881, 0.119]
    """
    scores = logits.detach().float()
    chosen = explained.long().view(-1, 1)
    if task.name == "regression":
        return None
    if task.name == "binary":
        z = one_logit(scores)
        return torch.sigmoid(torch.where(chosen[:, 0] == 1, z, -z))
    if task.name == "multilabel":
        return torch.sigmoid(scores).gather(1, chosen)[:, 0]
    if task.name == "segmentation":
        probabilities = torch.softmax(class_logits(scores), dim=1)
        index = chosen.view(-1, 1, *[1] * (probabilities.dim() - 2)).expand(
            -1, 1, *probabilities.shape[2:])
        return probabilities.gather(1, index).flatten(1).mean(1)
    return torch.softmax(scores.reshape(len(scores), -1), dim=1).gather(1, chosen)[:, 0]


def deletion_vs_random(deletion: float, random: float) -> float | None:
    """Mean deletion ÷ mean random deletion, or ``None`` when random deletion does not
    lower the probability (no chance level to compare with).

    Example::

        >>> deletion_vs_random(0.5, 0.25), deletion_vs_random(0.2, 0.0)
        (2.0, None)
    """
    if random <= 1e-6:
        return None
    return deletion / random


@dataclass(frozen=True)
class Faithfulness:
    """The faithfulness values of a chunk of samples (the module docstring says each).

    Attributes:
        shares: the shares of deletion against chance.
        curve: the shares of the deletion and insertion curves (0 and 1 included).
    """

    shares: tuple[float, ...] = SHARES
    curve: tuple[float, ...] = CURVE

    def measure(self, forward: Forward, inputs: Tensor, maps: Tensor,
                layer_size: tuple[int, ...], task: Task, logits: Tensor,
                explained: Tensor | None, indices: list[int],
                masks: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per-sample values ``(N,)`` by name (without the ``faithfulness/`` prefix);
        ``{}`` when the task has no probability (regression, a callable target).

        Args:
            forward: CPU inputs -> the model's output (see :data:`Forward`).
            inputs: the CPU inputs ``(N, C, *S)`` the maps explain.
            maps: their maps ``(N, *S)`` in ``[0, 1]`` at the inputs' size.
            layer_size: the layer's grid (random deletion removes its cells).
            task: the task (which probability).
            logits: the output on ``inputs`` (no forward repeated for it).
            explained: ``(N,)`` what each map explains.
            indices: the samples' dataset indices (the seeds of their random cells).
            masks: named bool regions ``(N, *S)`` for ``mask_deletion/<name>``.
        """
        if explained is None:
            return {}
        original = explained_probability(task, logits, explained)
        if original is None:
            return {}

        def probability(perturbed: Tensor) -> Tensor:
            out = explained_probability(task, forward(perturbed), explained)
            assert out is not None
            return out

        inputs = inputs.detach()
        baseline = mean_baseline(inputs)
        size = tuple(int(s) for s in inputs.shape[2:])
        maps = resize_maps(maps.detach().float().cpu(), size)
        values: dict[str, Tensor] = {}

        def replaced(region: Tensor, source: Tensor, target: Tensor) -> Tensor:
            return torch.where(region.unsqueeze(1), target, source)

        deleted = {0.0: original, 1.0: probability(baseline)}
        inserted = {0.0: deleted[1.0], 1.0: original}
        for share in sorted({*self.shares, *self.curve} - {0.0, 1.0}):
            top = top_share(maps, share)
            deleted[share] = probability(replaced(top, inputs, baseline))
            if share in self.curve:
                inserted[share] = probability(replaced(top, baseline, inputs))
        for share in self.shares:
            cells = random_cells(indices, size, tuple(int(c) for c in layer_size), share)
            label = f"{round(share * 100)}"
            values[f"deletion/{label}"] = original - deleted[share]
            values[f"random_deletion/{label}"] = original - probability(
                replaced(cells, inputs, baseline))
        values["deletion_auc"] = _area(deleted, self.curve)
        values["insertion_auc"] = _area(inserted, self.curve)
        weighted = inputs * maps.unsqueeze(1).to(inputs.dtype)
        masked = probability(weighted)
        values["average_drop"] = 100 * (original - masked).clamp(min=0) / original.clamp(
            min=1e-12)
        values["increase_in_confidence"] = 100 * (masked > original).float()
        for name, mask in (masks or {}).items():
            region = resize_region(mask, size)
            drop = original - probability(replaced(region, inputs, baseline))
            values[f"mask_deletion/{name}"] = torch.where(region.flatten(1).any(1), drop,
                                                          float("nan"))
        return values


def _area(curve: dict[float, Tensor], shares: tuple[float, ...]) -> Tensor:
    """Trapezoids under ``p`` over the shares (0 to 1)."""
    points = sorted(shares)
    total = torch.zeros_like(curve[points[0]])
    for low, high in itertools.pairwise(points):
        total = total + (high - low) * (curve[low] + curve[high]) / 2
    return total
