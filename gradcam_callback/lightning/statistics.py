"""Attention statistics over many validation samples: means with their spread, class maps,
and how fixed the evidence's location is; computed in chunks, gathered across ranks.

The callback shows a handful of images, but a scalar from 8 images is noise. Here every
rank explains its share of the first ``metric_samples`` validation samples (rank ``r``
takes indices ``r, r + world, ...``), ``chunk_size`` at a time, and folds each chunk into
running sums; memory is set by the chunk (plus 1 KB per sample for the consistency's top
cells), not by the number of samples. The sums of all ranks are then added (every rank
takes part in every collective, in the same order), so every rank ends with the same
numbers, and can hand them to ``EarlyStopping`` or an alarm with the same outcome. Before
each sum the ranks agree on whether any of them failed; if one did, all raise together
(:class:`RankFailed` on the others) instead of leaving a rank waiting.

Per scalar (the suffixes of :func:`gradcam_callback.metrics.attention_scalars`, plus
``location_consistency``) three numbers come out, for ``N`` samples with values ``x_i``:

- ``<name>``: the mean of ``x_i``;
- ``<name>_std``: their standard deviation (how much images differ; ``sqrt(mean(x^2) -
  mean(x)^2)``, the population formula);
- ``<name>_ci95``: the half-width of the normal-approximation 95% interval of the mean,
  ``1.96 * std / sqrt(N)`` (how much the mean itself could move with other samples).

Nothing here imports Lightning: the collectives come in as two callables, so the same code
runs under a Lightning strategy, plain ``torch.distributed``, or on one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradcam_callback.engine import explain_batch
from gradcam_callback.metrics import attention_scalars, top_cells
from gradcam_callback.ops import min_max, resize_maps

__all__ = [
    "MAP_SIZE",
    "MIN_CELLS",
    "Alarm",
    "AttentionStatistics",
    "RankFailed",
    "StatisticsResult",
    "collect_statistics",
    "earlier_layer",
    "parse_alarms",
    "summary_names",
]

MAP_SIZE = 32
"""Class maps and the consistency scalar are computed on maps shrunk to this side (pixels)."""
IMAGE_SIZE = 64
"""The mean input image (the class maps' backdrop) is kept at this side."""
MIN_CELLS = 4
"""A map with fewer cells than this along a side is too coarse for region metrics."""
Z95 = 1.959964
CONSISTENCY = "location_consistency"

ReadChunk = Callable[[Sequence[int]], tuple[Tensor, Tensor | None, dict[str, Tensor]]]
Reduce = Callable[[Tensor], Tensor]
Broadcast = Callable[[Any], Any]


@dataclass
class StatisticsResult:
    """What one statistics run produces (identical on every rank).

    Attributes:
        scalars: ``name -> mean`` plus ``name_std`` and ``name_ci95`` for every scalar.
        count: how many samples were explained (all ranks together).
        by_prediction: mean map per predicted class ``(C, h, w)`` (zeros where no sample).
        prediction_counts: samples per predicted class ``(C,)``.
        by_label: mean map per labelled class ``(C, h, w)``, or ``None`` without labels.
        label_counts: samples per labelled class ``(C,)``, or ``None``.
        mean_image: the mean model input ``(C_in, h, w)`` (for a backdrop).
        layer_size: the explained layer's own resolution ``(h, w)``.
        input_size: the inputs' ``(H, W)``.
    """

    scalars: dict[str, float]
    count: int
    by_prediction: Tensor
    prediction_counts: Tensor
    by_label: Tensor | None
    label_counts: Tensor | None
    mean_image: Tensor
    layer_size: tuple[int, int]
    input_size: tuple[int, int]

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


@dataclass
class AttentionStatistics:
    """Running sums of per-sample scalars, class maps and consistency; constant memory.

    Feed it chunks with :meth:`update`, add the sums of all ranks with :meth:`reduce`,
    read the result with :meth:`result`.
    """

    map_size: int = MAP_SIZE
    moments: dict[str, Tensor] = field(default_factory=dict)
    num_classes: int = 0
    prediction_sums: Tensor | None = None
    prediction_counts: Tensor | None = None
    label_sums: Tensor | None = None
    label_counts: Tensor | None = None
    top_sums: Tensor | None = None
    top_counts: Tensor | None = None
    image_sum: Tensor | None = None
    count: int = 0
    layer_size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None
    has_labels: bool = False
    _tops: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def update(self, cams: Tensor, layer_size: Sequence[int], inputs: Tensor,
               logits: Tensor, labels: Tensor | None, masks: dict[str, Tensor]) -> None:
        """Fold in one chunk.

        Args:
            cams: min-max normalised maps at the inputs' size ``(N, H, W)``.
            layer_size: the layer's own ``(h, w)``.
            inputs: the model inputs ``(N, C, H, W)`` (for the mean image).
            logits: ``(N, classes)``; the predicted class is their argmax.
            labels: ``(N,)`` class indices or ``None``.
            masks: named bool masks ``(N, H, W)``.
        """
        cams = cams.detach().float().cpu()
        self.layer_size = (int(layer_size[0]), int(layer_size[1]))
        self.input_size = (int(cams.shape[-2]), int(cams.shape[-1]))
        tolerance = cell_pixels(self.input_size, self.layer_size)
        for name, values in attention_scalars(cams, masks, tolerance).items():
            self._add_moments(name, values)
        predictions = (logits.detach().float().argmax(1).cpu() if logits.dim() == 2
                       else torch.zeros(len(cams), dtype=torch.long))  # one group
        self._ensure_classes(logits.shape[1] if logits.dim() == 2 else 1, inputs)
        small = _shrink(cams, self.map_size)
        self._add_class_maps(small, predictions, labels)
        top = top_cells(small)
        valid = top.any(dim=1)
        top, groups = top[valid], predictions[valid]
        self.top_sums.index_add_(0, groups, top.double())  # type: ignore[union-attr]
        self.top_counts.index_add_(  # type: ignore[union-attr]
            0, groups, torch.ones(len(groups), dtype=torch.float64))
        self._tops.append((top, groups))
        image = F.interpolate(inputs.detach().float().cpu(), size=_image_size(cams),
                              mode="bilinear", antialias=True, align_corners=False)
        self.image_sum += image.sum(0).double()  # type: ignore[operator]
        self.count += len(cams)

    def layout(self) -> dict[str, Any]:
        """What every rank must agree on before a reduction (rank zero's is broadcast)."""
        return {"names": sorted(self.moments), "num_classes": self.num_classes,
                "layer_size": self.layer_size, "input_size": self.input_size,
                "image_shape": None if self.image_sum is None else tuple(self.image_sum.shape),
                "map_shape": None if self.prediction_sums is None
                else tuple(self.prediction_sums.shape[1:]),
                "has_labels": self.has_labels}

    def reduce(self, reduce_sum: Reduce, broadcast: Broadcast,
               device: torch.device | str = "cpu") -> None:
        """Replace every sum by its total over all ranks; a rank without samples takes part
        with zeros.

        Four collectives, in the same order on every rank: rank zero's layout is
        broadcast; the ranks agree on whether each could lay its sums out that way (one
        flag; all raise :class:`RankFailed` if one could not, so none is left waiting in
        the next); the sums are added; the consistency's moments are added.
        """
        layout = broadcast(self.layout())
        if layout["names"] is None or layout["map_shape"] is None:
            return  # no rank had a sample: nothing to add up
        failure: Exception | None = None
        parts: list[Tensor] = []
        try:
            self._adopt(layout)
            parts = self._parts(layout["names"])
            empty = AttentionStatistics(map_size=self.map_size)
            empty._adopt(layout)  # what rank zero's layout holds, with nothing in it
            if _numel(parts) != _numel(empty._parts(layout["names"])):
                raise RankFailed(f"this rank's statistics do not fit rank zero's layout "
                                 f"{layout} (inputs of another size on this rank?)")
        except Exception as error:  # every rank must hear of it before the sum
            failure = error
        _agree(failure, reduce_sum, device)
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
        if CONSISTENCY not in self.moments and self.top_sums is not None:
            self.moments[CONSISTENCY] = self._consistency_moments()
        scalars: dict[str, float] = {}
        for name, (count, total, squares) in sorted(self.moments.items()):
            mean = total / count if count > 0 else float("nan")
            std = math.sqrt(max(0.0, squares / count - mean * mean)) if count > 0 else math.nan
            ci95 = Z95 * std / math.sqrt(count) if count > 0 else float("nan")
            for tag, value in zip(summary_names(name), (mean, std, ci95), strict=True):
                scalars[tag] = float(value)
        size = (self.map_size, self.map_size)
        empty = torch.zeros(0, *size)
        return StatisticsResult(
            scalars=scalars,
            count=self.count,
            by_prediction=_means(self.prediction_sums, self.prediction_counts, empty),
            prediction_counts=_counts(self.prediction_counts),
            by_label=_means(self.label_sums, self.label_counts, empty)
            if self.has_labels else None,
            label_counts=_counts(self.label_counts) if self.has_labels else None,
            mean_image=(self.image_sum / max(self.count, 1)).float()
            if self.image_sum is not None else torch.zeros(3, 1, 1),
            layer_size=self.layer_size or (0, 0),
            input_size=self.input_size or (0, 0),
        )

    def _add_moments(self, name: str, values: Tensor) -> None:
        values = values.detach().double().cpu()
        values = values[~values.isnan()]
        moments = torch.stack([torch.tensor(float(len(values)), dtype=torch.float64),
                               values.sum(), values.square().sum()])
        self.moments[name] = self.moments.get(name, torch.zeros(3, dtype=torch.float64)) \
            + moments

    def _ensure_classes(self, num_classes: int, inputs: Tensor) -> None:
        if self.prediction_sums is not None and num_classes <= self.num_classes:
            return
        height, width = _image_size(torch.zeros(1, *inputs.shape[-2:]))
        self._adopt({"num_classes": num_classes,
                     "map_shape": tuple(_shrink(torch.zeros(1, *inputs.shape[-2:]),
                                                self.map_size).shape[1:]),
                     "image_shape": (inputs.shape[1], height, width)})

    def _adopt(self, layout: dict[str, Any]) -> None:
        """Make every sum the shape ``layout`` says (zeros where this rank has nothing)."""
        for name in layout.get("names") or []:
            self.moments.setdefault(name, torch.zeros(3, dtype=torch.float64))
        classes, shape = layout["num_classes"], tuple(layout["map_shape"])

        def grown(current: Tensor | None, size: tuple[int, ...]) -> Tensor:
            fresh = torch.zeros(size, dtype=torch.float64)
            if current is not None:
                fresh[: current.shape[0]] = current
            return fresh

        self.prediction_sums = grown(self.prediction_sums, (classes, *shape))
        self.label_sums = grown(self.label_sums, (classes, *shape))
        self.top_sums = grown(self.top_sums, (classes, shape[0] * shape[1]))
        self.prediction_counts = grown(self.prediction_counts, (classes,))
        self.label_counts = grown(self.label_counts, (classes,))
        self.top_counts = grown(self.top_counts, (classes,))
        if self.image_sum is None:
            self.image_sum = torch.zeros(tuple(layout["image_shape"]), dtype=torch.float64)
        self.num_classes = classes
        if layout.get("layer_size") is not None:
            self.layer_size = tuple(layout["layer_size"])  # type: ignore[assignment]
            self.input_size = tuple(layout["input_size"])  # type: ignore[assignment]

    def _add_class_maps(self, small: Tensor, predictions: Tensor,
                        labels: Tensor | None) -> None:
        ones = torch.ones(len(small), dtype=torch.float64)
        self.prediction_sums.index_add_(0, predictions, small.double())  # type: ignore[union-attr]
        self.prediction_counts.index_add_(0, predictions, ones)  # type: ignore[union-attr]
        if labels is not None:
            labels = labels.long().cpu()
            known = (labels >= 0) & (labels < self.num_classes)
            self.label_sums.index_add_(0, labels[known], small[known].double())  # type: ignore[union-attr]
            self.label_counts.index_add_(0, labels[known], ones[known])  # type: ignore[union-attr]
            self.has_labels = True

    def _consistency_moments(self) -> Tensor:
        """Moments of each sample's :func:`~gradcam_callback.metrics.location_consistency`
        within its predicted class: ``(t_i . S_c / |t_i| - 1) / (n_c - 1)``, with ``t_i``
        its top cells and ``S_c`` the (all-rank) count of each cell among the class's top
        cells; samples alone in their class (or with a constant map) are left out."""
        moments = torch.zeros(3, dtype=torch.float64)
        for top, groups in self._tops:
            partners = self.top_counts[groups] - 1  # type: ignore[index]
            cells = top.double()
            shared = (cells * self.top_sums[groups]).sum(1) / cells.sum(1)  # type: ignore[index]
            values = ((shared - 1) / partners.clamp(min=1))[partners > 0]
            moments += torch.stack([torch.tensor(float(len(values)), dtype=torch.float64),
                                    values.sum(), values.square().sum()])
        return moments


def collect_statistics(
    model: nn.Module,
    read_chunk: ReadChunk,
    indices: Sequence[int],
    target_layer: str | nn.Module | None,
    *,
    targets: Callable[[Tensor | None], Any] = lambda labels: None,
    chunk_size: int = 64,
    explain_options: dict[str, Any] | None = None,
    reduce_sum: Reduce | None = None,
    broadcast: Broadcast | None = None,
    device: torch.device | str = "cpu",
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> tuple[StatisticsResult, str | None]:
    """Explain ``indices`` (this rank's share) in chunks and return the all-rank statistics.

    Args:
        model: the model to explain.
        read_chunk: ``indices -> (inputs, labels or None, masks)`` for a few samples.
        indices: the dataset indices this rank explains (may be empty).
        target_layer: passed to :func:`explain_batch`.
        targets: ``labels -> targets`` for :func:`explain_batch` (``None`` = predicted).
        chunk_size: samples per read and per forward pass.
        explain_options: more keyword arguments for :func:`explain_batch` (method,
            reshape_transform, output_transform).
        reduce_sum: adds a tensor over all ranks (``None`` on one process).
        broadcast: sends rank zero's object to every rank (``None`` on one process).
        device: where the collectives' tensors live (the model's device for NCCL).
        prepare: applied to the inputs before the model (precision conversion).

    Returns:
        The statistics, and the layer's name as the engine resolved it (``None`` when this
        rank explained nothing).

    Raises:
        Exception: what failed on this rank, or :class:`RankFailed` on a rank whose own part
            worked while another's failed. With ``reduce_sum`` given, every rank first takes
            part in one collective that tells whether any rank failed, so all ranks raise
            together and none waits for a rank that gave up.
    """
    statistics = AttentionStatistics()
    layer_name: str | None = None
    options = dict(explain_options or {})
    failure: Exception | None = None
    try:
        for start in range(0, len(indices), chunk_size):
            inputs, labels, masks = read_chunk(list(indices[start : start + chunk_size]))
            model_inputs = prepare(inputs) if prepare is not None else inputs
            explained = explain_batch(model, model_inputs, layer_name or target_layer,
                                      targets(labels), output_size=None, normalize=False,
                                      batch_size=chunk_size, **options)
            layer_name = explained.layer_name
            raw = explained.cams
            cams = min_max(resize_maps(raw.float(), inputs.shape[-2:]))
            statistics.update(cams, raw.shape[-2:], inputs, explained.logits, labels, masks)
            # let this chunk go before the next is read: memory is one chunk, not two
            del inputs, labels, masks, model_inputs, explained, raw, cams
    except Exception as error:  # every rank must hear of it before any sum
        failure = error
    if reduce_sum is not None:
        # Before any sum, the ranks agree on whether all of them got this far: a rank whose
        # own part failed must not leave the others waiting in a collective it never joins.
        _agree(failure, reduce_sum, device)
    elif failure is not None:
        raise failure
    statistics.reduce(reduce_sum or (lambda t: t), broadcast or (lambda o: o), device)
    return statistics.result(), layer_name


class RankFailed(RuntimeError):
    """The statistics failed on another rank, so this rank skips them too."""


def _agree(failure: Exception | None, reduce_sum: Reduce, device: torch.device | str) -> None:
    """One collective: how many ranks failed. Raise this rank's own ``failure``, or
    :class:`RankFailed` when only others failed; return when none did."""
    flag = torch.tensor([float(failure is not None)], dtype=torch.float64)
    failed = int(float(reduce_sum(flag.to(device)).sum()))
    if failure is not None:
        raise failure
    if failed:
        raise RankFailed(f"the statistics failed on {failed} other rank(s); every rank "
                         "skips them this time")


def _numel(parts: Sequence[Tensor | None]) -> int:
    return sum(0 if part is None else part.numel() for part in parts)


def earlier_layer(model: nn.Module, inputs: Tensor, layer_name: str,
                  min_cells: int = MIN_CELLS) -> str | None:
    """The last layer before ``layer_name`` whose output is at least ``min_cells`` on each
    side (one probe forward under ``no_grad``, hooks removed after), or ``None``."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, name=name: shapes.append((name, tuple(out.shape)))
                    if isinstance(out, Tensor) else None))
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    names = [name for name, _ in shapes]
    if layer_name not in names:
        return None
    before = shapes[: names.index(layer_name)]
    for name, shape in reversed(before):
        if len(shape) == 4 and min(shape[2], shape[3]) >= min_cells \
                and not layer_name.startswith(name + "."):
            return name
    return None


def _reduce_parts(parts: Sequence[Tensor | None], reduce_sum: Reduce,
                  device: torch.device | str) -> list[Tensor]:
    """Add every part over all ranks with one collective on one flat float64 tensor."""
    tensors = [p if p is not None else torch.zeros(0, dtype=torch.float64) for p in parts]
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(device)
    total = reduce_sum(flat).to("cpu", torch.float64)
    out, offset = [], 0
    for tensor in tensors:
        out.append(total[offset : offset + tensor.numel()].view(tensor.shape))
        offset += tensor.numel()
    return out


def _shrink(maps: Tensor, side: int) -> Tensor:
    """Maps resized to ``side`` on the longer side (antialiased), aspect ratio kept."""
    height, width = maps.shape[-2:]
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return maps.float()
    return F.interpolate(maps.float().unsqueeze(1), size=size, mode="bilinear",
                         antialias=scale < 1, align_corners=False).squeeze(1)


def _image_size(maps: Tensor) -> tuple[int, int]:
    height, width = maps.shape[-2:]
    scale = min(1.0, IMAGE_SIZE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _means(sums: Tensor | None, counts: Tensor | None, empty: Tensor) -> Tensor:
    if sums is None or counts is None:
        return empty
    return (sums / counts.clamp(min=1).view(-1, 1, 1)).float()


def _counts(counts: Tensor | None) -> Tensor:
    return torch.zeros(0, dtype=torch.long) if counts is None else counts.round().long()


_COMPARISONS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class Alarm:
    """One threshold on a scalar: ``metric`` (tag suffix, e.g. ``"lift/watermark_mask"``),
    ``op`` (one of ``>``, ``>=``, ``<``, ``<=``) and ``threshold``."""

    metric: str
    op: str
    threshold: float

    def fires(self, value: float) -> bool:
        """Whether ``value`` crosses the threshold (NaN never does)."""
        if math.isnan(value):
            return False
        return {">": value > self.threshold, ">=": value >= self.threshold,
                "<": value < self.threshold, "<=": value <= self.threshold}[self.op]

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_alarms(alarms: object) -> list[Alarm]:
    """``{"lift/watermark_mask": ">2", "border_lift": "<= 0.5"}`` as :class:`Alarm` s.

    Keys are tag suffixes after ``gradcam/<layer>/`` (a full ``gradcam/...`` tag is cut
    there); values a comparison and a number, as a string (YAML-friendly).

    Raises:
        TypeError: ``alarms`` is not a mapping of strings.
        ValueError: a condition that is not ``<op><number>``.
    """
    if alarms is None:
        return []
    if not isinstance(alarms, dict):
        raise TypeError(f"alarms={alarms!r}: must be a mapping metric -> condition, e.g. "
                        "{'lift/watermark_mask': '>2'}")
    parsed = []
    for metric, condition in alarms.items():
        if not isinstance(metric, str) or not isinstance(condition, str):
            raise TypeError(f"alarms={alarms!r}: keys and conditions must be strings, e.g. "
                            "{'lift/watermark_mask': '>2'}")
        text = condition.strip()
        op = next((o for o in _COMPARISONS if text.startswith(o)), None)
        try:
            threshold = float(text[len(op):]) if op is not None else math.nan
        except ValueError:
            threshold = math.nan
        if op is None or not math.isfinite(threshold):
            raise ValueError(f"alarms[{metric!r}]={condition!r}: a condition is one of "
                             f"{', '.join(_COMPARISONS)} followed by a number, e.g. '>2'")
        parsed.append(Alarm(_short_name(metric), op, threshold))
    return parsed


def _short_name(metric: str) -> str:
    """``gradcam/<layer>/lift/x`` -> ``lift/x``; a suffix stays as it is."""
    if metric.startswith("gradcam/"):
        parts = metric.split("/")
        return "/".join(parts[2:]) if len(parts) > 2 else metric
    return metric
