"""The callback's explanations: one layer, one reading, one target, for pictures and
statistics alike.

An :class:`Explainer` holds what the callback learns about the model while it runs (the
layer, chosen automatically or named, and how its output is read) and turns the
``target`` option into the scores :func:`~gradcam_callback.engine.explain_batch`
explains. :meth:`Explainer.explain` returns the maps of every row a picture shows
(``target="both"``: the prediction's and the label's), the logits of the same forward
pass, the layer's own resolution, and which samples' outputs were finite.

The task (:mod:`gradcam_callback.tasks`) is read from the first explanation's output and
labels, said once in an info line, and kept: it decides what each map explains, what the
captions say and how samples group.

A sample whose outputs are NaN or infinite (a diverging run) is not an error: its maps
are all zero, it is named once in a warning, and the callers leave it out of the numbers.
The observer is never stricter than the trainer, which trains on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gradcam_callback.engine import Explanation, explain_batch, get_method
from gradcam_callback.engine.targets import Target, TargetSpec, select_scores
from gradcam_callback.notices import Notices
from gradcam_callback.ops import min_max, resize_maps
from gradcam_callback.options import ExplainOptions
from gradcam_callback.tasks import Grouping, Task, read_task

__all__ = ["Explained", "Explainer"]


@dataclass(frozen=True)
class Explained:
    """The explanation of a batch.

    Attributes:
        rows: ``(title, maps)`` per row shown; maps ``(N, *S)`` float32 in ``[0, 1]`` at
            the inputs' spatial size (``(N, H, W)``, ``(N, T)``, ``(N, D, H, W)``), on the
            CPU, all zero for a sample whose outputs are not finite.
        logits: the model's output ``(N, ...)`` of the same forward pass, detached, on the CPU.
        finite: ``(N,)`` bool, whether each sample's outputs are all finite.
        layer_size: the explained layer's own resolution (``(h, w)``, ``(t,)``, ``(d, h, w)``).
        task: the task read (:class:`~gradcam_callback.tasks.Task`).
        labels: the labels as the task reads them, or ``None``.
        explained: ``(N,)`` what the first row's maps explain per sample (class, side,
            label, output), or ``None`` (a callable target).
        regions: regions the labels give (segmentation: ``label_region``) ``(N, H, W)``.
        outlines: segmentation: the predicted region of the explained class ``(N, H, W)``.
    """

    rows: list[tuple[str, Tensor]]
    logits: Tensor
    finite: Tensor
    layer_size: tuple[int, ...]
    task: Task = field(default_factory=Task)
    labels: Tensor | None = None
    explained: Tensor | None = None
    regions: dict[str, Tensor] = field(default_factory=dict)
    outlines: Tensor | None = None

    @property
    def maps(self) -> Tensor:
        """The first row's maps (the prediction's with ``target="both"``)."""
        return self.rows[0][1]

    def grouping(self) -> Grouping:
        """How the samples group into class maps (see :meth:`.Task.grouping`)."""
        return self.task.grouping(self.logits, self.labels)


_EXPLAINS = {
    ("multiclass", "predicted"): "each sample's top class",
    ("multiclass", "label"): "each sample's true class",
    ("multiclass", "k"): "class {k} for every sample",
    ("multilabel", "predicted"): "each sample's top-scoring label",
    ("multilabel", "label"): "each sample's top-scoring true label",
    ("multilabel", "k"): "label {k} for every sample",
    ("binary", "predicted"): "each sample's predicted side (+logit if positive, -logit if "
                             "negative)",
    ("binary", "label"): "each sample's true side (+logit if positive, -logit if negative)",
    ("binary", "k"): "side {k} for every sample ({sign}logit)",
    ("segmentation", "predicted"): "each sample's most frequent predicted class (background "
                                   "aside), its logits summed over the pixels predicted as it",
    ("segmentation", "label"): "each sample's most frequent labelled class (background "
                               "aside), its logits summed over its labelled pixels",
    ("segmentation", "k"): "class {k}, its logits summed over the pixels predicted as it",
    ("regression", "predicted"): "the output",
    ("regression", "k"): "output {k}",
}


def explains(task: str, target: object) -> str | None:
    """What a target explains for a task, in words (the info line); ``None`` for a
    callable target."""
    if callable(target) and not isinstance(target, str):
        return None
    if target == "both":
        first, second = explains(task, "predicted"), explains(task, "label")
        return f"{first} (row 'predicted') and {second} (row 'label')"
    if isinstance(target, int):
        words = _EXPLAINS.get((task, "k"))
        return None if words is None else words.format(k=target,
                                                       sign="+" if target == 1 else "-")
    return _EXPLAINS.get((task, str(target)))


@dataclass
class Explainer:
    """Explain batches of the model under training with the callback's options.

    Attributes:
        options: the explaining options (layer, method, target, task, readings, chunk size).
        notices: where the layer and task lines and the non-finite warning go.
        layer_name: the layer explained: ``target_layer``, or the automatic choice once made.
        reading: how the layer's output is read, once known (e.g. ``"channels-first"``).
        task: the task, once read from the first output and labels.
    """

    options: ExplainOptions = field(default_factory=ExplainOptions)
    notices: Notices = field(default_factory=Notices)
    layer_name: str | None = None
    reading: str | None = None
    task: Task | None = None

    def __post_init__(self) -> None:
        if self.layer_name is None:
            self.layer_name = self.options.target_layer

    def forget(self) -> None:
        """Forget the layer and task learned (the explaining options changed)."""
        self.layer_name, self.reading, self.task = self.options.target_layer, None, None

    def explain(self, model: nn.Module, inputs: Tensor, labels: Tensor | None = None, *,
                label_note: str | None = None, indices: Sequence[int] | None = None,
                primary_only: bool = False) -> Explained:
        """Explain ``inputs`` (on the model's device and in its precision).

        Args:
            model: the model under training (left as it was: mode, gradients, hooks, RNG).
            inputs: the model inputs.
            labels: the labels as the batch holds them, or ``None``.
            label_note: why there are no labels, and what to do (the error).
            indices: the samples' dataset indices, to name them in warnings.
            primary_only: the first row only (what the statistics need).

        Raises:
            ValueError: the target needs labels the batch does not have, labels or an
                output that contradict the task, or anything the engine refuses (an
                unknown layer, targets beyond the outputs, ...).
        """
        target = self.options.target
        primary = "predicted" if target == "both" else target
        task = self.task
        if task is None:  # the first output decides the task; the same rule scores it
            first, logits, layer_size = self._maps(
                model, inputs, _FirstTarget(self.options, primary, labels, label_note),
                self.options.task)
            task = self._read_task(logits, labels)
            task_labels, note = task.labels(labels, label_note)
        else:
            task_labels, note = task.labels(labels, label_note)
            first, logits, layer_size = self._maps(model, inputs,
                                                   task.target(primary, task_labels, note),
                                                   task.name)
        finite = torch.isfinite(logits.float().reshape(len(logits), -1)).all(dim=1)
        title = get_method(self.options.method).title
        if target != "both" or primary_only:
            rows = [(title + (" (label)" if target == "label" else ""), first)]
        else:
            by_label, _, _ = self._maps(model, inputs, task.target("label", task_labels, note),
                                        task.name)
            rows = [(f"{title} (predicted)", first), (f"{title} (label)", by_label)]
        if not finite.all():
            self._warn_not_finite(finite, indices)
            keep = finite.view(-1, *[1] * (first.dim() - 1))
            rows = [(name, torch.where(keep, maps, 0.0)) for name, maps in rows]
        explained = task.explained(primary, logits, task_labels)
        size = tuple(int(side) for side in inputs.shape[2:])
        return Explained(rows, logits, finite, layer_size, task, task_labels, explained,
                         task.regions(task_labels, explained, size),
                         None if primary_only else task.outlines(logits, explained, size))

    def _read_task(self, logits: Tensor, labels: Tensor | None) -> Task:
        options = self.options
        task = read_task(options.task, logits, labels, target=options.target,
                         threshold=options.threshold, background=options.background)
        self.task = task
        what = explains(task.name, options.target)
        self.notices.info_once("task", f"GradCAMCallback: {task.describe()}"
                               + (f"; target={options.target!r} explains {what}" if what
                                  else ""))
        return task

    def layer_maps(self, model: nn.Module, inputs: Tensor, targets: TargetSpec,
                   task: str) -> Explanation:
        """The engine's raw maps of ``targets`` at the layer's own resolution (not
        normalised), with the options' method, readings and chunk size, for the layer
        learned so far (or chosen now)."""
        options = self.options
        with warnings.catch_warnings():  # said once, by dataset index, in explain()
            warnings.filterwarnings("ignore", "non-finite values", RuntimeWarning)
            return explain_batch(model, inputs, self.layer_name, targets,
                                 method=options.method,
                                 reshape_transform=options.reshape_transform,
                                 output_size=None, normalize=False,
                                 output_transform=options.output_transform,
                                 batch_size=options.batch_size, task=task)

    def _maps(self, model: nn.Module, inputs: Tensor, targets: TargetSpec, task: str
              ) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """Maps normalised at the inputs' size (CPU), the logits, the layer's resolution."""
        options = self.options
        result = self.layer_maps(model, inputs, targets, task)
        if self.reading is None:
            chosen = "chosen automatically" if options.target_layer is None else "target_layer"
            self.notices.info_once("layer", f"GradCAMCallback: explaining {result.layer_name!r} "
                                   f"({chosen}): {result.reading}")
        self.layer_name, self.reading = result.layer_name, result.reading
        raw = result.cams.detach().float()
        maps = min_max(resize_maps(raw, inputs.shape[2:])).cpu()
        return maps, result.logits.detach().cpu(), tuple(raw.shape[1:])

    def _warn_not_finite(self, finite: Tensor, indices: Sequence[int] | None) -> None:
        bad = (~finite).nonzero().flatten().tolist()
        named = [indices[i] for i in bad] if indices is not None else bad
        shown = f"{named[:8]}{'...' if len(named) > 8 else ''}"
        self.notices.warn_once(
            "not_finite",
            f"GradCAMCallback: the model's outputs for samples {shown} are NaN or infinite "
            "(has training diverged? check the loss and the learning rate). Their maps are "
            "left empty, and they are left out of the scalars, the drift history and the "
            "filmstrip until the outputs are finite again; training goes on.")


@dataclass(frozen=True)
class _FirstTarget(Target):
    """The target of the first explanation, before the task is known: each chunk's output
    (the first is the automatic layer choice's probe) reads the task with
    :func:`~gradcam_callback.tasks.read_task`, the rule the explainer then keeps."""

    options: ExplainOptions
    word: object
    labels: Tensor | None
    note: str | None

    @property
    def custom(self) -> bool:
        """A callable ``target`` option: the user's own score."""
        return callable(self.word) and not isinstance(self.word, str)

    def __call__(self, logits: Tensor) -> Tensor:
        options = self.options
        task = read_task(options.task, logits.detach(), self.labels, target=options.target,
                         threshold=options.threshold, background=options.background)
        labels, note = task.labels(self.labels, self.note)
        return select_scores(task.target(self.word, labels, note), logits, task.name)

    def chunk(self, part: slice) -> _FirstTarget:
        labels = self.labels[part] if self.labels is not None else None
        return _FirstTarget(self.options, self.word, labels, self.note)
