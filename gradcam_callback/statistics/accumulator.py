"""Running sums of the attention statistics: means with their spread, class maps, and how
fixed the evidence's location is; added up across ranks.

:class:`AttentionStatistics` folds in one chunk of explained samples at a time
(:meth:`~AttentionStatistics.update`), so memory is set by the chunk (plus 1 KB per sample
for the consistency's top cells), not by the number of samples. The sums of all ranks are
then added (:meth:`~AttentionStatistics.reduce`: every rank takes part in every collective,
in the same order), so every rank ends with the same numbers and can hand them to
``EarlyStopping`` or an alarm with the same outcome. Before the sum the ranks agree on
whether any of them failed; if one did, all raise together (:class:`RankFailed` on the
others) instead of leaving a rank waiting.

Per scalar (the suffixes of :func:`gradcam_callback.metrics.attention_scalars`, plus
``location_consistency``) three numbers come out, for ``N`` samples with values ``x_i``:

- ``<name>``: the mean of ``x_i``;
- ``<name>_std``: their standard deviation (how much images differ; ``sqrt(mean(x^2) -
  mean(x)^2)``, the population formula);
- ``<name>_ci95``: the half-width of the normal-approximation 95% interval of the mean,
  ``1.96 * std / sqrt(N)`` (how much the mean itself could move with other samples).

A number that is undefined (no sample to average; a spread of fewer than two samples) is
never NaN: it is left out of :attr:`StatisticsResult.scalars` and named, with its cause,
in :attr:`StatisticsResult.undefined`.

Nothing here imports Lightning: the collectives come in as two callables, so the same code
runs under a Lightning strategy, plain ``torch.distributed``, or on one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradcam_callback.faithfulness import SHARE_NAMES
from gradcam_callback.metrics import attention_scalars, top_cells
from gradcam_callback.ops import resize_maps, shrink_maps, shrunk_size
from gradcam_callback.tasks import Grouping, Task

__all__ = [
    "CONSISTENCY",
    "MAP_SIZE",
    "MIN_CELLS",
    "AttentionStatistics",
    "Broadcast",
    "RankFailed",
    "Reduce",
    "StatisticsResult",
    "agree",
    "cell_pixels",
    "summarise",
    "summary_names",
]

MAP_SIZE = 32
"""Class maps and the consistency scalar are computed on maps shrunk to this side (pixels)."""
MAP_SIZES = {1: 256, 2: MAP_SIZE, 3: 16}
"""The side of the class maps per spatial rank: signals keep 256 steps (a curve), volumes
16 voxels a side (4,096 cells, as many as a 64 px image)."""
IMAGE_SIZE = 64
"""The mean input image (the class maps' backdrop) is kept at this side."""
IMAGE_SIZES = {1: 256, 2: IMAGE_SIZE, 3: 32}
"""The side of the mean input per spatial rank."""
MIN_CELLS = 4
"""A map with fewer cells than this along a side is too coarse for region metrics."""
Z95 = 1.959964
CONSISTENCY = "location_consistency"

Reduce = Callable[[Tensor], Tensor]
Broadcast = Callable[[Any, int], Any]
"""``(obj, src)`` -> rank ``src``'s object, on every rank."""


@dataclass
class StatisticsResult:
    """What one statistics run produces (identical on every rank).

    Attributes:
        scalars: ``name -> mean`` plus ``name_std`` and ``name_ci95`` for every scalar
            that is defined; never NaN.
        undefined: the scalars left out of ``scalars`` this time, each with its cause.
        count: how many samples were explained (all ranks together).
        by_prediction: mean map per predicted class ``(C, *s)`` (``(C, h, w)``, ``(C, t)``,
            ``(C, d, h, w)``; zeros where no sample).
        prediction_counts: samples per predicted class ``(C,)``.
        by_label: mean map per labelled class ``(C, *s)``, or ``None`` without labels.
        label_counts: samples per labelled class ``(C,)``, or ``None``.
        mean_image: the mean model input ``(C_in, *s)`` (for a backdrop).
        layer_size: the explained layer's own resolution (``(h, w)``, ``(t,)``, ...).
        input_size: the inputs' spatial size (``(H, W)``, ``(T,)``, ``(D, H, W)``).
    """

    scalars: dict[str, float]
    undefined: dict[str, str]
    count: int
    by_prediction: Tensor
    prediction_counts: Tensor
    by_label: Tensor | None
    label_counts: Tensor | None
    mean_image: Tensor
    layer_size: tuple[int, ...]
    input_size: tuple[int, ...]

    @property
    def cell_pixels(self) -> int:
        """One CAM cell in input pixels (the pointing game's tolerance)."""
        return cell_pixels(self.input_size, self.layer_size)


def cell_pixels(input_size: Sequence[int], layer_size: Sequence[int]) -> int:
    """Input pixels per CAM cell along the coarser side (at least 1)."""
    return max(1, max(math.ceil(i / max(1, c)) for i, c in zip(input_size, layer_size,
                                                             strict=True)))


def summary_names(name: str) -> tuple[str, str, str]:
    """The three tags of one scalar: mean, ``_std`` and ``_ci95``."""
    return name, f"{name}_std", f"{name}_ci95"


def summarise(name: str, count: float, total: float, squares: float
              ) -> tuple[dict[str, float], dict[str, str]]:
    """Mean, ``_std`` and ``_ci95`` of one scalar from its moments ``(N, sum x, sum x^2)``,
    and the causes of those that are undefined (no sample; fewer than two for a spread).

    Example::

        >>> summarise("lift", 4, 8.0, 20.0)
        ({'lift': 2.0, 'lift_std': 1.0, 'lift_ci95': 0.979982}, {})
        >>> summarise("lift", 1, 2.0, 4.0)[1]["lift_ci95"]
        'a spread needs at least two samples, and 1 had a value'
    """
    mean_name, std_name, ci_name = summary_names(name)
    if count < 1:
        cause = no_value_cause(name)
        return {}, {mean_name: cause, std_name: cause, ci_name: cause}
    mean = total / count
    if count < 2:
        cause = "a spread needs at least two samples, and 1 had a value"
        return {mean_name: mean}, {std_name: cause, ci_name: cause}
    std = math.sqrt(max(0.0, squares / count - mean * mean))
    return {mean_name: mean, std_name: std, ci_name: Z95 * std / math.sqrt(count)}, {}


DELETION_VS_RANDOM = "faithfulness/deletion_vs_random"


def _deletion_vs_random(scalars: dict[str, float]) -> tuple[float | None, str | None]:
    """Mean deletion over the shares ÷ mean random deletion over the same shares; the
    cause when it is undefined (``None, None`` without deletions measured)."""
    names = [(f"faithfulness/deletion/{s}", f"faithfulness/random_deletion/{s}")
             for s in SHARE_NAMES]
    if not all(top in scalars and random in scalars for top, random in names):
        return None, None
    deletion = sum(scalars[top] for top, _ in names) / len(names)
    random = sum(scalars[random] for _, random in names) / len(names)
    if random <= 1e-6:
        return None, ("random deletion did not lower the probability on average: there "
                      "is no chance level to compare with (does the model ignore its "
                      "input?)")
    return deletion / random, None


def no_value_cause(name: str) -> str:
    """Why no sample has a value of the scalar ``name``, in words."""
    if name == CONSISTENCY:
        return ("no sample had another sample of its predicted class to compare with (each "
                "class had at most one)")
    if name.startswith("faithfulness/mask_deletion/"):
        return (f"the mask {name.removeprefix('faithfulness/mask_deletion/')!r} is empty in "
                "every sample measured")
    if name.startswith("faithfulness/"):
        return "no sample was measured (faithfulness_samples, or outputs not finite)"
    if name.startswith("lift/"):
        return (f"the mask {name.removeprefix('lift/')!r} is empty in every sample (a lift "
                "divides by the mask's area)")
    return "no sample had a value (were all outputs NaN?)"


@dataclass
class AttentionStatistics:
    """Running sums of per-sample scalars, class maps and consistency; constant memory.

    Feed it chunks with :meth:`update`, add the sums of all ranks with :meth:`reduce`,
    read the result with :meth:`result`. The sums are empty until the first chunk (or a
    reduction) gives them their layout.
    """

    map_size: int | None = None
    """The class maps' side; ``None``: by the inputs' rank (:data:`MAP_SIZES`)."""
    moments: dict[str, Tensor] = field(default_factory=dict)
    num_classes: int = 0
    prediction_sums: Tensor = field(default_factory=lambda: _zeros(0))
    prediction_counts: Tensor = field(default_factory=lambda: _zeros(0))
    label_sums: Tensor = field(default_factory=lambda: _zeros(0))
    label_counts: Tensor = field(default_factory=lambda: _zeros(0))
    top_sums: Tensor = field(default_factory=lambda: _zeros(0))
    top_counts: Tensor = field(default_factory=lambda: _zeros(0))
    image_sum: Tensor = field(default_factory=lambda: _zeros(0))
    count: int = 0
    layer_size: tuple[int, ...] | None = None
    input_size: tuple[int, ...] | None = None
    has_labels: bool = False
    _tops: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def update(self, cams: Tensor, layer_size: Sequence[int], inputs: Tensor,
               logits: Tensor, labels: Tensor | None, masks: dict[str, Tensor], *,
               grouping: Grouping | None = None) -> None:
        """Fold in one chunk.

        Args:
            cams: min-max normalised maps at the inputs' size ``(N, *S)``.
            layer_size: the layer's own resolution.
            inputs: the model inputs ``(N, C, *S)`` (for the mean image).
            logits: ``(N, classes)``; without ``grouping``, the predicted class is their
                argmax.
            labels: ``(N,)`` class indices or ``None`` (read without ``grouping`` only).
            masks: named bool masks ``(N, *S)``.
            grouping: how the samples group (the task's: sides, labels, classes); ``None``
                groups single-label classification outputs by argmax and ``labels``.
        """
        cams = cams.detach().float().cpu()
        self.layer_size = _sides(layer_size)
        self.input_size = _sides(cams.shape[1:])
        tolerance = cell_pixels(self.input_size, self.layer_size)
        for name, values in attention_scalars(cams, masks, tolerance).items():
            self._add_moments(name, values)
        if grouping is None:  # single-label classification: the argmax and class indices
            grouping = Task("multiclass").grouping(logits, labels)
        predictions = grouping.predicted.long().cpu()
        self._ensure_classes(grouping.count, inputs)
        small = shrink_maps(cams, self._map_side(cams.dim() - 1))
        if tuple(small.shape[1:]) != tuple(self.prediction_sums.shape[1:]):
            small = resize_maps(small, self.prediction_sums.shape[1:])  # (a padded batch)
        self._add_class_maps(small, grouping)
        top = top_cells(small)  # no top cells for a map without evidence: it shares nothing
        self.top_sums.index_add_(0, predictions, top.double())
        self.top_counts.index_add_(0, predictions, torch.ones(len(top), dtype=torch.float64))
        self._tops.append((top, predictions))
        images = inputs.detach().float().cpu()
        small_images = shrink_maps(images.flatten(0, 1), IMAGE_SIZES[images.dim() - 2])
        if tuple(small_images.shape[1:]) != tuple(self.image_sum.shape[1:]):
            small_images = resize_maps(small_images, self.image_sum.shape[1:])
        self.image_sum += small_images.view(*images.shape[:2], *small_images.shape[1:]) \
            .sum(0).double()
        self.count += len(cams)

    @property
    def allocated(self) -> bool:
        """Whether the sums have their layout (after a first chunk or a reduction)."""
        return self.num_classes > 0

    def layout(self) -> dict[str, Any]:
        """What every rank must agree on before a reduction (rank zero's is broadcast)."""
        allocated = self.allocated
        return {"names": sorted(self.moments), "num_classes": self.num_classes,
                "layer_size": self.layer_size, "input_size": self.input_size,
                "image_shape": tuple(self.image_sum.shape) if allocated else None,
                "map_shape": tuple(self.prediction_sums.shape[1:]) if allocated else None,
                "has_labels": self.has_labels}

    def reduce(self, reduce_sum: Reduce, broadcast: Broadcast,
               device: torch.device | str = "cpu", *, rank: int = 0,
               world_size: int = 1) -> None:
        """Replace every sum by its total over all ranks; a rank without samples takes part
        with zeros.

        Five collectives, in the same order on every rank: which ranks have sums (the
        first of them lays them out; none: nothing to add, on every rank); its layout is
        broadcast; the ranks agree on whether each could lay its sums out that way (one
        flag; all raise :class:`RankFailed` if one could not, so none is left waiting in
        the next); the sums are added; the consistency's moments are added.
        """
        having = torch.zeros(world_size, dtype=torch.float64)
        having[rank] = float(self.allocated)
        having = reduce_sum(having.to(device)).cpu()
        if not bool((having > 0).any()):
            return  # no rank had a sample: nothing to add up
        source = int((having > 0).nonzero()[0, 0])
        layout = broadcast(self.layout(), source)
        failure: Exception | None = None
        parts: list[Tensor] = []
        try:
            self._adopt(layout)
            parts = self._parts(layout["names"])
            empty = AttentionStatistics(map_size=self.map_size)
            empty._adopt(layout)  # what the layout holds, with nothing in it
            if _numel(parts) != _numel(empty._parts(layout["names"])):
                raise RankFailed(f"this rank's statistics do not fit rank {source}'s layout "
                                 f"{layout} (inputs of another size on this rank?)")
        except Exception as error:  # every rank must hear of it before the sum
            failure = error
        agree(failure, reduce_sum, device)
        total = _reduce_parts(parts, reduce_sum, device)
        for name, value in zip(layout["names"], total, strict=False):
            self.moments[name] = value
        (self.prediction_sums, self.prediction_counts, self.label_sums, self.label_counts,
         self.top_sums, self.top_counts, self.image_sum, extra) = total[len(layout["names"]):]
        self.count, self.has_labels = int(extra[0]), bool(extra[1] > 0)
        self.moments[CONSISTENCY] = _reduce_parts([self._consistency_moments()], reduce_sum,
                                                  device)[0]
        self._tops = []

    def _parts(self, names: Sequence[str]) -> list[Tensor]:
        """Every sum, in the order the ranks add them up."""
        return [*(self.moments[name] for name in names), self.prediction_sums,
                self.prediction_counts, self.label_sums, self.label_counts, self.top_sums,
                self.top_counts, self.image_sum,
                torch.tensor([float(self.count), float(self.has_labels)], dtype=torch.float64)]

    def result(self) -> StatisticsResult:
        """Means, spreads and class maps of what was folded in (after :meth:`reduce`)."""
        if CONSISTENCY not in self.moments and self.allocated:
            self.moments[CONSISTENCY] = self._consistency_moments()
        scalars: dict[str, float] = {}
        undefined: dict[str, str] = {}
        for name, moments in sorted(self.moments.items()):
            values, causes = summarise(name, *(float(m) for m in moments))
            scalars.update(values)
            undefined.update(causes)
        ratio, cause = _deletion_vs_random(scalars)
        if ratio is not None:
            scalars[DELETION_VS_RANDOM] = ratio
        elif cause is not None:
            undefined[DELETION_VS_RANDOM] = cause
        return StatisticsResult(
            scalars=scalars,
            undefined=undefined,
            count=self.count,
            by_prediction=self._means(self.prediction_sums, self.prediction_counts),
            prediction_counts=self.prediction_counts.round().long(),
            by_label=self._means(self.label_sums, self.label_counts)
            if self.has_labels else None,
            label_counts=self.label_counts.round().long() if self.has_labels else None,
            mean_image=(self.image_sum / max(self.count, 1)).float()
            if self.allocated else torch.zeros(3, 1, 1),
            layer_size=self.layer_size or (0, 0),
            input_size=self.input_size or (0, 0),
        )

    def add_values(self, name: str, values: Tensor) -> None:
        """Fold per-sample values of a scalar measured beside the maps (NaN: not measured)
        into its moments (``faithfulness/...``)."""
        self._add_moments(name, values)

    def _add_moments(self, name: str, values: Tensor) -> None:
        values = values.detach().double().cpu()
        values = values[~values.isnan()]
        moments = torch.stack([torch.tensor(float(len(values)), dtype=torch.float64),
                               values.sum(), values.square().sum()])
        self.moments[name] = self.moments.get(name, torch.zeros(3, dtype=torch.float64)) \
            + moments

    def _map_side(self, rank: int) -> int:
        return self.map_size if self.map_size is not None else MAP_SIZES[rank]

    def _means(self, sums: Tensor, counts: Tensor) -> Tensor:
        if not self.allocated:
            side = self._map_side(2)
            return torch.zeros(0, side, side)
        return (sums / counts.clamp(min=1).view(-1, *[1] * (sums.dim() - 1))).float()

    def _ensure_classes(self, num_classes: int, inputs: Tensor) -> None:
        if self.allocated and num_classes <= self.num_classes:
            return
        spatial = inputs.shape[2:]
        self._adopt({"num_classes": num_classes,
                     "map_shape": shrunk_size(spatial, self._map_side(len(spatial))),
                     "image_shape": (inputs.shape[1],
                                     *shrunk_size(spatial, IMAGE_SIZES[len(spatial)]))})

    def _adopt(self, layout: dict[str, Any]) -> None:
        """Make every sum the shape ``layout`` says (zeros where this rank has nothing)."""
        for name in layout.get("names") or []:
            self.moments.setdefault(name, torch.zeros(3, dtype=torch.float64))
        classes, shape = layout["num_classes"], tuple(layout["map_shape"])

        def grown(current: Tensor, size: tuple[int, ...]) -> Tensor:
            fresh = _zeros(*size)
            if current.numel():
                fresh[: current.shape[0]] = current
            return fresh

        self.prediction_sums = grown(self.prediction_sums, (classes, *shape))
        self.label_sums = grown(self.label_sums, (classes, *shape))
        self.top_sums = grown(self.top_sums, (classes, math.prod(shape)))
        self.top_counts = grown(self.top_counts, (classes,))
        self.prediction_counts = grown(self.prediction_counts, (classes,))
        self.label_counts = grown(self.label_counts, (classes,))
        if not self.image_sum.numel():
            self.image_sum = _zeros(*layout["image_shape"])
        self.num_classes = classes
        if layout.get("layer_size") is not None:
            self.layer_size = _sides(layout["layer_size"])
            self.input_size = _sides(layout["input_size"])

    def _add_class_maps(self, small: Tensor, grouping: Grouping) -> None:
        """Each sample's map into every group it belongs to (one for single-label tasks,
        its predicted or true set for multi-label)."""
        flat = small.double().flatten(1)
        for members, sums, counts in ((grouping.by_prediction, self.prediction_sums,
                                       self.prediction_counts),
                                      (grouping.by_label, self.label_sums, self.label_counts)):
            if members is None:
                continue
            weights = members.cpu().double()[:, : self.num_classes]
            sums[: weights.shape[1]] += (weights.T @ flat).view(-1, *sums.shape[1:])
            counts[: weights.shape[1]] += weights.sum(0)
        if grouping.by_label is not None:
            self.has_labels = True

    def _consistency_moments(self) -> Tensor:
        """Moments of each sample's :func:`~gradcam_callback.metrics.location_consistency`
        within its predicted class: ``(t_i . S_c / |t_i| - 1) / (n_c - 1)``, with ``t_i``
        its top cells, ``S_c`` the (all-rank) count of each cell among the class's top
        cells and ``n_c`` the class's samples; 0 for a sample without top cells (a
        constant map); samples alone in their class are left out."""
        moments = torch.zeros(3, dtype=torch.float64)
        for top, groups in self._tops:
            partners = self.top_counts[groups] - 1
            cells = top.double()
            sizes = cells.sum(1)
            shared = (cells * self.top_sums[groups]).sum(1) / sizes.clamp(min=1)
            own = (sizes > 0).double()  # a sample shares all of its own top cells
            values = ((shared - own) / partners.clamp(min=1))[partners > 0]
            moments += torch.stack([torch.tensor(float(len(values)), dtype=torch.float64),
                                    values.sum(), values.square().sum()])
        return moments


class RankFailed(RuntimeError):
    """The statistics failed on another rank, so this rank skips them too."""


def agree(failure: Exception | None, reduce_sum: Reduce, device: torch.device | str) -> None:
    """One collective: how many ranks failed. Raise this rank's own ``failure``, or
    :class:`RankFailed` when only others failed; return when none did."""
    flag = torch.tensor([float(failure is not None)], dtype=torch.float64)
    failed = int(float(reduce_sum(flag.to(device)).sum()))
    if failure is not None:
        raise failure
    if failed:
        raise RankFailed(f"the statistics failed on {failed} other rank(s); every rank "
                         "skips them this time")


def _numel(parts: Sequence[Tensor]) -> int:
    return sum(part.numel() for part in parts)


def _reduce_parts(parts: Sequence[Tensor], reduce_sum: Reduce,
                  device: torch.device | str) -> list[Tensor]:
    """Add every part over all ranks with one collective on one flat float64 tensor."""
    tensors = list(parts)
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(device)
    total = reduce_sum(flat).to("cpu", torch.float64)
    out, offset = [], 0
    for tensor in tensors:
        out.append(total[offset : offset + tensor.numel()].view(tensor.shape))
        offset += tensor.numel()
    return out


def _zeros(*size: int) -> Tensor:
    return torch.zeros(size, dtype=torch.float64)


def _sides(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(value) for value in values)
