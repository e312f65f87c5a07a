"""What the model is trained for, and what that means for each part of a run.

A :class:`Task` is read once, from the model's output on the fixed samples and their
labels (:func:`read_task`): ``task="auto"`` takes ``(N,)``/``(N, 1)`` outputs as binary,
``(N, C, h, w)`` as segmentation, ``(N, C)`` outputs with 0/1 labels ``(N, C)`` as
multi-label, anything else as multiclass; regression only when asked. Labels that
contradict the task are an error then, before training, naming what was found and what
fits.

The task then answers, for every part of the callback:

- which score a map explains (:meth:`Task.target`: the engine's
  :mod:`~gradcam_callback.engine.targets`) and what each sample's map explains
  (:meth:`Task.explained`);
- what the captions say and which samples get a red frame (:meth:`Task.captions`);
- how samples group into class maps and location consistency (:meth:`Task.grouping`);
- which regions come from the labels (:meth:`Task.regions`: segmentation's
  ``label_region``) and which region the grid outlines (:meth:`Task.outlines`).

================ ====================== ======================= =========================
task             ``"predicted"``        ``"label"``             captions
================ ====================== ======================= =========================
multiclass       the top class          the true class          true class; predicted
                                                                class, softmax p
binary           the predicted side     the true side           true side; predicted
                 (``+z`` or ``-z``)                             side, sigmoid p of it
multilabel       the top-scoring label  the top-scoring true    true labels; predicted
                                        label                   set (p > threshold);
                                                                the explained label
segmentation     the most frequent      the most frequent       class and pixel share,
                 predicted class (not   labelled class, over    true and predicted
                 ``background``), over  its labelled pixels
                 its predicted pixels
regression       the output (``k``:     an error                true and predicted value
                 output ``k``)
================ ====================== ======================= =========================

Nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam_callback.engine.targets import (
    BinaryTarget,
    OutputTarget,
    SegmentationTarget,
    TargetSpec,
    TopLabelTarget,
    class_logits,
    frequent_class,
    output_task,
    resize_region,
    top_label,
)
from gradcam_callback.render.captions import class_name

__all__ = ["BINARY_NAMES", "LABEL_REGION", "Grouping", "Task", "read_task"]

BINARY_NAMES = ("negative", "positive")
"""The sides of a binary model when ``class_names`` does not name them."""
LABEL_REGION = "label_region"
"""Segmentation: the region of the label mask that is the explained class."""


@dataclass(frozen=True)
class Grouping:
    """How a chunk of samples falls into groups (classes, sides, labels).

    Attributes:
        count: the number of groups.
        predicted: ``(N,)`` each sample's predicted group (location consistency compares
            the samples of one group).
        by_prediction: ``(N, count)`` bool, the groups a sample is predicted in (one for a
            single-label task, the predicted set for multi-label).
        by_label: ``(N, count)`` bool, the groups its labels put it in, or ``None``.
    """

    count: int
    predicted: Tensor
    by_prediction: Tensor
    by_label: Tensor | None


def _zero_one(labels: Tensor) -> bool:
    if labels.dtype.is_complex or not labels.numel():
        return False
    values = labels.detach().float()
    return bool(((values == 0) | (values == 1)).all())


def _unit(labels: Tensor) -> bool:
    """Whether every label is a number in [0, 1] (a probability, a smoothed 0/1)."""
    if labels.dtype == torch.bool or labels.dtype.is_complex or not labels.numel():
        return False
    values = labels.detach().float()
    return bool(((values >= 0) & (values <= 1)).all())


def _integral(labels: Tensor) -> bool:
    if labels.dtype == torch.bool or labels.dtype.is_complex:
        return False
    if not labels.dtype.is_floating_point:
        return True
    values = labels.detach()
    return bool(torch.isfinite(values).all() and (values == values.round()).all())


def _shape(tensor: Tensor) -> str:
    return str(tuple(tensor.shape))


def read_task(task: str, logits: Tensor, labels: Tensor | None, *, target: object,
              threshold: float = 0.5, background: int | None = 0) -> Task:
    """The task of a model, from the ``task`` option, its output and the labels.

    Args:
        task: the ``task`` option (``"auto"`` or a task's name).
        logits: the model's output on the fixed samples.
        labels: their labels as the batch holds them, or ``None``.
        target: the ``target`` option (checked against the task).
        threshold: multi-label: a label is predicted where its sigmoid is above this.
        background: segmentation: the class ``"predicted"`` and ``"label"`` pass over.

    Raises:
        ValueError: an output the task cannot read, labels that contradict it, a target
            or ``background`` that does not fit it; each message names the argument, what
            was found and what would fit.
    """
    source, said = f"task={task!r}", task != "auto"
    if task == "auto":
        task, source = _auto(logits, labels)
    custom = callable(target) and not isinstance(target, str)
    # labels the task cannot read stop the run when they say the task is another one:
    # when it was said, when the target reads them, or on a one-logit model (continuous
    # labels there mean a regression, not a binary classifier); else they are left out
    strict = said or target in ("label", "both") or (task == "binary" and not custom)
    found = Task(task, _outputs(task, logits, custom), threshold, background, source,
                 soft_labels=said, strict_labels=strict)
    found.check(logits, labels, target)
    return found


def _auto(logits: Tensor, labels: Tensor | None) -> tuple[str, str]:
    shape, by_shape = _shape(logits), output_task("auto", logits)
    if by_shape == "binary":
        return "binary", f"one logit per sample {shape}"
    if by_shape == "segmentation":
        if logits.shape[1] == 1:
            return "segmentation", (f"a one-logit mask output {shape}: foreground where the "
                                    "logit > 0, class 1")
        return "segmentation", f"a per-pixel output {shape}"
    if (logits.dim() == 2 and labels is not None and labels.dim() == 2
            and tuple(labels.shape) == tuple(logits.shape) and _zero_one(labels)):
        if bool((labels.float().sum(1) == 1).all()):
            return "multiclass", (f"an output {shape} with one-hot labels {_shape(labels)}; "
                                  "pass task='multilabel' if a sample may have several")
        return "multilabel", f"an output {shape} with multi-hot 0/1 labels {_shape(labels)}"
    return "multiclass", f"an output {shape}"


def _outputs(task: str, logits: Tensor, custom: bool = False) -> int:
    if task == "binary" or logits.dim() < 2:
        return 1
    if task == "regression":
        return int(logits[:1].numel())
    if task == "segmentation":
        return max(2, int(logits.shape[1])) if logits.dim() == 4 else 1
    if logits.dim() != 2 and custom:  # a callable's own output (detections...): one group
        return 1
    return int(logits.shape[1])


@dataclass(frozen=True)
class Task:
    """A task, read: its name and what it needs to read outputs and labels.

    Attributes:
        name: ``"multiclass"``, ``"binary"``, ``"multilabel"``, ``"segmentation"`` or
            ``"regression"``.
        outputs: classes (multiclass, multi-label, segmentation), 1 (binary), outputs per
            sample (regression).
        threshold: multi-label: the sigmoid above which a label is predicted.
        background: segmentation: the class passed over by ``"predicted"``/``"label"``.
        source: how it was read, in words (for the info line).
    """

    name: str = "multiclass"
    outputs: int = 0
    threshold: float = 0.5
    background: int | None = 0
    source: str = ""
    soft_labels: bool = False
    """binary, multi-label: read labels in [0, 1] by their side (the task was said)."""
    strict_labels: bool = True
    """Labels the task cannot read raise; else they are left out, with a note why."""

    # -- what is explained ------------------------------------------------------------

    def target(self, target: object, labels: Tensor | None,
               label_note: str | None = None) -> TargetSpec:
        """The engine's target for a ``target`` option word (``"predicted"``, ``"label"``),
        a class index or a callable, with the task's labels (see :meth:`labels`)."""
        if callable(target) and not isinstance(target, str):
            return target
        if target == "label":
            labels = self._need_labels(labels, label_note)
        name = self.name
        if name == "binary":
            if target == "predicted":
                return BinaryTarget()
            return BinaryTarget(labels if target == "label" else int(target))  # type: ignore[call-overload]
        if name == "segmentation":
            if target == "predicted":
                return SegmentationTarget(background=self.background)
            if target == "label":
                assert labels is not None
                classes = self.label_classes(labels)
                return SegmentationTarget(classes, labels == classes.view(-1, 1, 1),
                                          self.background)
            return SegmentationTarget(int(target), background=self.background)  # type: ignore[call-overload]
        if name == "regression":
            return OutputTarget(None if target == "predicted" else int(target))  # type: ignore[call-overload]
        if name == "multilabel" and target == "label":
            assert labels is not None
            return TopLabelTarget(labels)
        if target == "predicted":
            return None
        return labels if target == "label" else int(target)  # type: ignore[call-overload]

    def explained(self, target: object, logits: Tensor, labels: Tensor | None) -> Tensor | None:
        """``(N,)`` what each sample's map explains for ``target``: its class, side, label
        or output; ``None`` for a callable target."""
        if callable(target) and not isinstance(target, str):
            return None
        n = len(logits)
        if target not in ("predicted", "label"):
            return torch.full((n,), int(target), dtype=torch.long)  # type: ignore[call-overload]
        if target == "predicted":
            return self.predicted(logits)
        assert labels is not None
        if self.name == "multilabel":
            return top_label(logits.detach().float(), labels)
        if self.name == "segmentation":
            return self.label_classes(labels)
        return labels.long()

    def predicted(self, logits: Tensor) -> Tensor:
        """``(N,)`` each sample's predicted class (side, top label, most frequent class)."""
        scores = logits.detach().float()
        if self.name == "binary":
            return (scores.reshape(len(scores), -1)[:, 0] >= 0).long()
        if self.name == "segmentation":
            return frequent_class(class_logits(scores).argmax(1), self.outputs,
                                  self.background)
        if self.name == "regression" or scores.dim() != 2:  # (a callable's custom output)
            return torch.zeros(len(scores), dtype=torch.long)
        return scores.argmax(1)

    def label_classes(self, labels: Tensor) -> Tensor:
        """Segmentation: per sample, the most frequent labelled class but background."""
        return frequent_class(labels, self.outputs, self.background)

    # -- labels -----------------------------------------------------------------------

    def labels(self, labels: Tensor | None, note: str | None = None
               ) -> tuple[Tensor | None, str | None]:
        """The labels as the task reads them, or ``None`` with why: class indices
        ``(N,)`` (multiclass; one-hot rows are turned into indices), sides ``(N,)``
        (binary), bool ``(N, C)`` (multi-label), class masks ``(N, H, W)``
        (segmentation), float ``(N, K)`` (regression).

        Raises:
            ValueError: labels that contradict the task (see :func:`read_task`).
        """
        if labels is None:
            return None, note
        problem = self._label_problem(labels)
        if problem is not None and self.strict_labels:
            raise ValueError(problem)
        if problem is not None:
            return None, f"{problem} (left out: the target does not read them)"
        name = self.name
        if name == "multiclass":
            if labels.dim() == 2 and labels.shape[1] == 1 and _integral(labels):
                return labels[:, 0].long(), None  # a column of class indices
            if labels.dim() == 2:
                if _zero_one(labels) and bool((labels.float().sum(1) == 1).all()):
                    return labels.float().argmax(1), None  # one-hot
                return None, (f"the labels are {labels.dtype} {_shape(labels)} (soft labels?), "
                              "not class indices: convert them in the dataset, or return "
                              "(inputs, class indices) from batch_to_input")
            if not _integral(labels):
                return None, (f"the labels are {labels.dtype} {_shape(labels)}, not class "
                              "indices: return (inputs, class indices) from batch_to_input")
            return labels.long(), None
        if name == "binary":  # (soft labels, with task='binary': their side)
            return (labels.reshape(len(labels)).float() >= 0.5).long(), None
        if name == "multilabel":  # (soft labels, with task='multilabel': their side)
            return labels.float() >= 0.5, None
        if name == "segmentation":
            return (labels[:, 0] if labels.dim() == 4 else labels).long(), None
        return labels.reshape(len(labels), -1).float(), None

    def _label_problem(self, labels: Tensor) -> str | None:
        shape, name = _shape(labels), self.name
        n = len(labels)
        if name == "multiclass":
            if labels.dim() == 2 and _zero_one(labels) and bool((labels.sum(1) > 1).any()):
                return (f"task='multiclass', but the labels {shape} are multi-hot (a sample "
                        "has several): pass task='multilabel' for a multi-label model")
            if labels.dim() > 2:
                return (f"task='multiclass', but the labels have shape {shape}: class "
                        f"indices ({n},) fit it (label masks are task='segmentation')")
            return None
        if name == "binary":
            if labels.dim() > 2 or labels[:1].numel() != 1:
                hint = (" (multi-hot: task='multilabel')" if labels.dim() == 2 else "")
                return (f"task='binary' needs one 0/1 label per sample, ({n},) or ({n}, 1); "
                        f"the labels have shape {shape}{hint}")
            if not _zero_one(labels) and not (self.soft_labels and _unit(labels)):
                values = sorted({round(float(v), 4) for v in labels.flatten()[:64].tolist()})[:6]
                soft = (" pass task='binary' to read soft labels in [0, 1] (label smoothing) "
                        "as their side (>= 0.5);" if _unit(labels) else "")
                return (f"task='binary' needs 0/1 labels, got values {values}:{soft} class "
                        "indices of more classes are task='multiclass', continuous targets "
                        "task='regression'")
            return None
        if name == "multilabel":
            zero_one = _zero_one(labels) or (self.soft_labels and _unit(labels))
            if labels.dim() != 2 or labels.shape[1] != self.outputs or not zero_one:
                return (f"task='multilabel' needs 0/1 labels ({n}, {self.outputs}), one "
                        f"column per output; the labels are {labels.dtype} {shape} "
                        "(class indices (N,) are task='multiclass')")
            return None
        if name == "segmentation":
            squeezed = labels[:, 0] if labels.dim() == 4 and labels.shape[1] == 1 else labels
            if squeezed.dim() != 3 or not _integral(squeezed):
                return (f"task='segmentation' needs label masks of class indices ({n}, H, W); "
                        f"the labels are {labels.dtype} {shape}")
            return None
        if labels.dtype == torch.bool or labels.dtype.is_complex:
            return f"task='regression' needs numeric labels, got {labels.dtype} {shape}"
        return None

    def _need_labels(self, labels: Tensor | None, note: str | None) -> Tensor:
        if labels is None:
            kind = {"multiclass": "class-index labels (a 1-D integer tensor (N,))",
                    "binary": "0/1 labels (N,) or (N, 1)",
                    "multilabel": "0/1 labels (N, C)",
                    "segmentation": "label masks (N, H, W)"}.get(self.name, "labels")
            raise ValueError(f"target='label' needs {kind}, but "
                             f"{note or 'the batch has none'}")
        return labels

    # -- the check before training --------------------------------------------------

    def check(self, logits: Tensor, labels: Tensor | None, target: object) -> None:
        """Raise what does not fit this task (see :func:`read_task`)."""
        name, shape = self.name, _shape(logits)
        custom = callable(target) and not isinstance(target, str)
        if name == "binary" and not (logits.dim() == 1 or (logits.dim() == 2
                                                            and logits.shape[1] == 1)):
            raise ValueError(f"task='binary' needs one logit per sample, (N,) or (N, 1); the "
                             f"model outputs {shape} (two-logit softmax models are "
                             "task='multiclass')")
        if (name in ("multiclass", "multilabel") and not custom and logits.dim() == 2
                and logits.shape[1] == 1):
            raise ValueError(f"task={name!r} on a one-logit output {shape}: a softmax over one "
                             "logit is always 1; a one-logit model is task='binary'")
        if name in ("multiclass", "multilabel") and logits.dim() != 2 and not custom:
            raise ValueError(f"task={name!r} needs an output (N, classes); the model outputs "
                             f"{shape}" + (" (per-pixel: task='segmentation')"
                                           if logits.dim() == 4 else
                                           " (per step or per voxel? segmentation is read "
                                           "for images' (N, C, h, w) outputs only)"
                                           if logits.dim() in (3, 5) else ""))
        if name == "segmentation":
            if logits.dim() != 4:
                raise ValueError(f"task='segmentation' needs a per-pixel output (N, C, h, w); "
                                 f"the model outputs {shape}")
            if self.background is not None and not 0 <= self.background < self.outputs:
                raise ValueError(f"background={self.background}: not a class of a model with "
                                 f"{self.outputs} outputs (valid: 0..{self.outputs - 1}, or "
                                 "None to count every class)")
        if isinstance(target, int) and not isinstance(target, bool):
            limit = 2 if name == "binary" else self.outputs
            if not 0 <= target < limit and name == "binary":
                raise ValueError(f"target={target}: a binary model (output {shape}) has two "
                                 "sides, 0 (negative) and 1 (positive)")
            if not 0 <= target < limit:
                raise ValueError(f"target class {target} is out of range for a {name} model "
                                 f"with {self.outputs} outputs {shape} (valid: 0..{limit - 1})")
        if name == "regression" and target in ("label", "both"):
            raise ValueError(f"target={target!r}: a regression output has no label side to "
                             "explain; use 'predicted' or an output index k")
        self.labels(labels)  # contradictions raise

    # -- what a sample's caption says ---------------------------------------------------

    def names(self, class_names: Sequence[str] | None) -> Sequence[str] | None:
        """The names of the groups: ``class_names``; a binary model's sides are
        ``negative``, ``positive`` unless ``class_names`` has two names; a regression's one
        group is ``all samples``."""
        if self.name == "binary" and (class_names is None or len(class_names) != 2):
            return BINARY_NAMES
        if self.name == "regression":
            return ("all samples",)
        return class_names

    def captions(self, logits: Tensor, labels: Tensor | None,
                 class_names: Sequence[str] | None, explained: Tensor | None = None
                 ) -> tuple[list[list[str]], list[bool]]:
        """Per sample, caption lines and whether the prediction is wrong (the red frame).

        ``labels`` as :meth:`labels` returns them; ``explained`` the first row's
        :meth:`explained` (multi-label names it). A sample whose outputs are not finite
        reads ``pred: output not finite``.
        """
        names = self.names(class_names)
        scores = logits.detach().float()
        n = len(scores)
        finite = torch.isfinite(scores.reshape(n, -1)).all(dim=1)
        lines: list[list[str]] = [[] for _ in range(n)]
        wrong = [False] * n
        for i in range(n):
            if labels is not None:
                lines[i].append(f"true: {self._true_text(labels[i], names)}")
            if not finite[i]:
                lines[i].append("pred: output not finite")
                continue
            text, is_wrong = self._predicted_text(scores[i], None if labels is None
                                                  else labels[i], names)
            if text:
                lines[i].append(f"pred: {text}")
            wrong[i] = is_wrong
            if self.name == "multilabel" and explained is not None:
                k = int(explained[i])
                lines[i].append(f"map: {class_name(k, names)} "
                                f"{float(scores[i, k].sigmoid()):.2f}")
            if self.name == "regression" and self.outputs > 1 and explained is not None:
                lines[i].append(f"map: output {int(explained[i])}")
        return lines, wrong

    def _true_text(self, label: Tensor, names: Sequence[str] | None) -> str:
        if self.name == "multilabel":
            true = label.nonzero().flatten().tolist()
            return ", ".join(class_name(k, names) for k in true) or "none"
        if self.name == "segmentation":
            k = int(frequent_class(label[None], self.outputs, self.background)[0])
            known = (label >= 0) & (label < self.outputs)  # (not an ignore index)
            return f"{class_name(k, names)} {_share((label == k)[known]):.0%}"
        if self.name == "regression":
            return ", ".join(f"{float(v):.3g}" for v in label.flatten()[:3])
        return class_name(int(label), names)

    def _predicted_text(self, scores: Tensor, label: Tensor | None,
                        names: Sequence[str] | None) -> tuple[str, bool]:
        name = self.name
        if name == "binary":
            z = float(scores.flatten()[0])
            side = int(z >= 0)
            p = torch.sigmoid(torch.tensor(z if side else -z)).item()
            return f"{class_name(side, names)} {p:.2f}", label is not None and side != int(label)
        if name == "multilabel":
            probabilities = scores.sigmoid()
            chosen = (probabilities > self.threshold).nonzero().flatten().tolist()
            chosen.sort(key=lambda k: -float(probabilities[k]))
            text = ", ".join(f"{class_name(k, names)} {float(probabilities[k]):.2f}"
                             for k in chosen) or "none"
            wrong = label is not None and set(chosen) != set(label.nonzero().flatten().tolist())
            return text, wrong
        if name == "segmentation":
            predicted = class_logits(scores[None])[0].argmax(0)
            k = int(frequent_class(predicted[None], self.outputs, self.background)[0])
            wrong = False
            if label is not None:
                wrong = k != int(frequent_class(label[None], self.outputs, self.background)[0])
            return f"{class_name(k, names)} {_share(predicted == k):.0%}", wrong
        if name == "regression":
            return ", ".join(f"{float(v):.3g}" for v in scores.flatten()[:3]), False
        if scores.dim() != 1:  # a custom output (callable target): no class to name
            return "", False
        probabilities = scores.softmax(0)
        k = int(probabilities.argmax())
        return (f"{class_name(k, names)} {float(probabilities[k]):.2f}",
                label is not None and k != int(label))

    def sample_labels(self, labels: Tensor | None, count: int,
                      class_names: Sequence[str] | None) -> list[str | None]:
        """Each sample's label in a few words (the filmstrip's row names); ``labels`` as
        the batch holds them. ``None`` for samples without a readable label."""
        try:
            read, _ = self.labels(labels)
        except ValueError:  # (said where it matters: the check before training)
            read = None
        if read is None:
            return [None] * count
        names = self.names(class_names)
        texts = [self._true_text(read[i], names) for i in range(count)]
        return [text.rsplit(" ", 1)[0] if self.name == "segmentation" else text
                for text in texts]

    # -- groups and regions -------------------------------------------------------------

    @property
    def groups(self) -> int:
        """How many groups the class maps have (at least one)."""
        return max(1, {"binary": 2, "regression": 1}.get(self.name, self.outputs))

    def grouping(self, logits: Tensor, labels: Tensor | None) -> Grouping:
        """How samples group: by prediction and by label (see :class:`Grouping`)."""
        count = self.groups
        if not self.outputs and logits.dim() == 2:  # a Task() that never read an output
            count = max(1, int(logits.shape[1]))
        predicted = self.predicted(logits).cpu()
        if self.name == "multilabel":
            by_prediction = logits.detach().float().sigmoid().cpu() > self.threshold
        else:
            by_prediction = F.one_hot(predicted, count).bool()
        by_label = None
        if labels is not None and self.name != "regression":
            labels = labels.cpu()
            if self.name == "multilabel":
                by_label = labels.bool()
            else:
                classes = self.label_classes(labels) if self.name == "segmentation" else labels
                known = (classes >= 0) & (classes < count)
                by_label = F.one_hot(classes.clamp(0, count - 1), count).bool() & known[:, None]
        return Grouping(count, predicted, by_prediction, by_label)

    def regions(self, labels: Tensor | None, explained: Tensor | None,
                size: tuple[int, ...]) -> dict[str, Tensor]:
        """Regions the labels give: segmentation's :data:`LABEL_REGION`, the labelled
        pixels of the explained class, at the inputs' ``size``."""
        if self.name != "segmentation" or labels is None or explained is None:
            return {}
        region = labels.cpu() == explained.cpu().view(-1, 1, 1)
        return {LABEL_REGION: resize_region(region, size)}

    def outlines(self, logits: Tensor, explained: Tensor | None,
                 size: tuple[int, ...]) -> Tensor | None:
        """Segmentation: the pixels predicted as the explained class ``(N, H, W)`` at
        ``size``, which the grid outlines; ``None`` for the other tasks."""
        if self.name != "segmentation" or explained is None:
            return None
        predicted = class_logits(logits.detach().float()).argmax(1).cpu()
        return resize_region(predicted == explained.cpu().view(-1, 1, 1), size)

    def describe(self) -> str:
        """The info line's words: ``task 'binary' (one logit per sample (8, 1))``."""
        return f"task {self.name!r} ({self.source})"


def _share(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else 0.0
