"""Which score a CAM explains.

A target spec is one of:

- ``None``: what the model predicts (the task's rule, below);
- an ``int``: that class (side, label, output) for every sample;
- a sequence or 1-D integer tensor of ``N`` of them, one per sample;
- a :class:`Target` (:class:`BinaryTarget`, :class:`SegmentationTarget`,
  :class:`OutputTarget`, :class:`TopLabelTarget`) or any callable ``output -> (N,)``
  scores (a detection score, ...).

What ``None`` and the integers mean depends on the task (``task=``, torchmetrics' words):

============== ============================== =======================================
task           ``None`` (predicted)           ``k``
============== ============================== =======================================
multiclass     the highest logit              logit ``k``
multilabel     the highest logit (top label)  logit ``k`` (label ``k``)
binary         the predicted side: ``+z`` if  side ``k``: ``+z`` for 1 (positive),
               ``z >= 0``, else ``-z``        ``-z`` for 0 (negative)
segmentation   the most frequent predicted    class ``k``: its logits summed over the
               class but ``background`` (0),  pixels predicted as ``k``
               its logits summed over the
               pixels predicted as it
regression     the output (one output only)   output ``k``
============== ============================== =======================================

``task="auto"`` reads the output's shape: ``(N,)`` or ``(N, 1)`` is binary, ``(N, C, h,
w)`` segmentation, anything else multiclass (multilabel scores the same way; regression
is never guessed).

The score is the pre-activation value (logit); the gradient of the summed scores is what
the CAM methods read. For a one-logit binary model the evidence for the negative side is
the evidence against the positive one, so the negative side's score is ``-z``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

TargetFn = Callable[[Tensor], Tensor]
TargetSpec = int | Sequence[int] | Tensor | TargetFn | None
OutputTransform = Callable[[Any], Tensor]
TaskName = Literal["auto", "multiclass", "binary", "multilabel", "segmentation", "regression"]
TASKS: tuple[str, ...] = get_args(TaskName)
"""The tasks, torchmetrics' words, ``"auto"`` first."""

__all__ = [
    "TASKS",
    "BinaryTarget",
    "OutputTarget",
    "OutputTransform",
    "SegmentationTarget",
    "Target",
    "TargetSpec",
    "TaskName",
    "TopLabelTarget",
    "check_task",
    "class_logits",
    "frequent_class",
    "logits_from_output",
    "one_logit",
    "output_task",
    "resize_region",
    "select_scores",
    "top_label",
]


def logits_from_output(output: Any, output_transform: OutputTransform | None) -> Tensor:
    """The model's output as a tensor, applying ``output_transform`` when given.

    Without ``output_transform``, an output that carries a ``logits`` tensor (a Hugging
    Face ``ModelOutput``, a dict with a ``"logits"`` key, a named tuple or object with a
    ``logits`` field) gives that tensor.

    Raises:
        TypeError: the output (after the transform) is not a tensor; the message says
            what the model returned and how to pick the logits out of it.
    """
    if output_transform is not None:
        output = output_transform(output)
        if not isinstance(output, Tensor):
            raise TypeError(
                f"output_transform must return a tensor, got {type(output).__name__}"
            )
        return output
    if isinstance(output, Tensor):
        return output
    logits = _named_logits(output)
    if logits is not None:
        return logits
    if isinstance(output, dict):
        hint = f"e.g. output_transform=lambda out: out[{next(iter(output), 'key')!r}]"
    elif isinstance(output, (tuple, list)):
        hint = "e.g. output_transform=lambda out: out[0]"
    else:
        hint = "a function that returns the logits tensor"
    raise TypeError(
        f"the model returned a {type(output).__name__}, not a tensor of scores; "
        f"pass output_transform= to pick the logits out of it ({hint})"
    )


def _named_logits(output: Any) -> Tensor | None:
    """``output["logits"]`` or ``output.logits`` when it is a tensor, else ``None``."""
    if isinstance(output, Mapping):
        logits = output.get("logits")
    else:
        logits = getattr(output, "logits", None)
    return logits if isinstance(logits, Tensor) else None


def check_task(task: object) -> str:
    """``task``, when it is one of :data:`TASKS`.

    Raises:
        ValueError: any other value (the message lists the tasks).
    """
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"task={task!r}: valid tasks are {', '.join(map(repr, TASKS))}")
    return task


def output_task(task: str, logits: Tensor) -> str:
    """The task a model output is scored as: ``task``, or with ``"auto"`` read from the
    output's shape (``(N,)``/``(N, 1)``: binary; ``(N, C, h, w)``: segmentation; else
    multiclass).

    Raises:
        ValueError: an unknown task word.

    Example::

        >>> import torch
        >>> output_task("auto", torch.zeros(4, 1)), output_task("auto", torch.zeros(4, 3, 8, 8))
        ('binary', 'segmentation')
    """
    if check_task(task) != "auto":
        return task
    if logits.dim() == 1 or (logits.dim() == 2 and logits.shape[1] == 1):
        return "binary"
    if logits.dim() == 4:
        return "segmentation"
    return "multiclass"


def select_scores(targets: TargetSpec, logits: Tensor, task: str = "auto") -> Tensor:
    """Return the ``(N,)`` scores to differentiate, one per sample.

    Args:
        targets: the target spec (see the module docstring).
        logits: the model output as a tensor: ``(N, num_classes)`` for multiclass and
            multilabel, ``(N,)`` or ``(N, 1)`` for binary, ``(N, C, h, w)`` for
            segmentation, ``(N, ...)`` for regression; anything for a callable.
        task: how ``None`` and integer targets are read (the module docstring's table).

    Raises:
        ValueError: wrong number of targets, a class outside ``[0, num_classes)``, an
            output of the wrong shape for the task, or a callable returning something
            other than ``N`` scores.
        TypeError: targets of a non-integer type.
    """
    n = logits.shape[0]
    if callable(targets) and not isinstance(targets, Tensor):
        scores = targets(logits)
        if not isinstance(scores, Tensor) or tuple(scores.shape) != (n,):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(
                f"the targets callable must return a tensor of shape (N,) = ({n},), one "
                f"score per sample, got {shape}"
            )
        return scores
    task = output_task(task, logits)
    if task == "binary":
        sides = None if targets is None else _classes_tensor(targets, n, logits.device)
        return BinaryTarget(sides)(logits)
    if task == "segmentation":
        classes = None if targets is None else _classes_tensor(targets, n, logits.device)
        return SegmentationTarget(classes)(logits)
    if task == "regression":
        if targets is not None and not isinstance(targets, numbers.Integral):
            raise TypeError(f"regression targets are one output index (int) or None, got "
                            f"{targets!r}")
        return OutputTarget(None if targets is None else int(targets))(logits)

    if logits.dim() != 2:
        raise ValueError(
            f"class targets need a model output of shape (N, num_classes), got "
            f"{tuple(logits.shape)}; pass a callable target (output -> (N,) scores) or an "
            "output_transform"
        )
    num_classes = logits.shape[1]
    if targets is None:
        classes = logits.argmax(dim=1)
    else:
        classes = _classes_tensor(targets, n, logits.device)
        bad = (classes < 0) | (classes >= num_classes)
        if bad.any():
            value = int(classes[bad][0])
            raise ValueError(
                f"target class {value} is out of range for a model with {num_classes} "
                f"outputs (valid: 0..{num_classes - 1})"
            )
    return _gather(logits, classes)


def _gather(logits: Tensor, classes: Tensor) -> Tensor:
    if classes.is_inference():  # made under torch.inference_mode: autograd cannot save it
        classes = classes.clone()
    return logits.gather(1, classes.view(-1, 1)).squeeze(1)


class Target:
    """A score rule that knows its samples: ``target(output) -> (N,)`` scores, and
    ``target.chunk(part)`` the same rule for the samples in ``part`` (a ``slice``), so
    :func:`~gradcam_callback.engine.explain_batch` can explain a batch a chunk at a time.
    A plain callable is applied to every chunk as it is."""

    @property
    def custom(self) -> bool:
        """Whether the score is the caller's own (a callable inside), not a task's rule:
        the automatic layer choice then keeps a segmentation model's logit maps."""
        return False

    def __call__(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def chunk(self, part: slice) -> Target:
        """This target for the samples ``part`` of the batch."""
        return self


def class_logits(logits: Tensor) -> Tensor:
    """A segmentation output as per-class logits: ``(N, C, h, w)`` as it is; a one-logit
    mask output ``(N, 1, h, w)`` (a sigmoid U-Net) as two classes, background ``-z`` and
    foreground ``z``, so the foreground is predicted where ``z > 0`` and each side's score
    is the evidence for it, as for a one-logit binary classifier."""
    if logits.dim() == 4 and logits.shape[1] == 1:
        return torch.cat([-logits, logits], dim=1)
    return logits


def _part(value: Tensor | int | None, part: slice) -> Tensor | int | None:
    return value[part] if isinstance(value, Tensor) and value.dim() > 0 else value


def one_logit(logits: Tensor) -> Tensor:
    """The ``(N,)`` logit of a one-logit binary output ``(N,)`` or ``(N, 1)``.

    Raises:
        ValueError: an output with more than one value per sample.
    """
    if logits.dim() == 1:
        return logits
    if logits.dim() == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    raise ValueError(
        f"task='binary' needs a one-logit output (N,) or (N, 1), got {tuple(logits.shape)}; "
        "a two-logit softmax model is task='multiclass'"
    )


@dataclass(frozen=True)
class BinaryTarget(Target):
    """A one-logit binary model's side: ``+z`` for the positive side (1), ``-z`` for the
    negative side (0), with ``z`` the logit.

    Attributes:
        sides: ``None`` (each sample's predicted side: positive where ``z >= 0``), an
            ``int`` 0 or 1 for all, or ``(N,)`` sides (e.g. the 0/1 labels).

    Example::

        >>> import torch
        >>> BinaryTarget()(torch.tensor([[-1.5], [2.0]])).tolist()
        [1.5, 2.0]
        >>> BinaryTarget(torch.tensor([1, 1]))(torch.tensor([[-1.5], [2.0]])).tolist()
        [-1.5, 2.0]
    """

    sides: Tensor | int | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        z = one_logit(logits)
        if self.sides is None:
            positive = z.detach() >= 0
        else:
            sides = _classes_tensor(self.sides, len(z), z.device)
            bad = (sides != 0) & (sides != 1)
            if bad.any():
                raise ValueError(
                    f"binary targets are sides, 0 (negative) or 1 (positive); got "
                    f"{int(sides[bad][0])}"
                )
            positive = sides == 1
        return torch.where(positive, z, -z)

    def chunk(self, part: slice) -> BinaryTarget:
        return BinaryTarget(_part(self.sides, part))


def frequent_class(class_map: Tensor, num_classes: int, background: int | None = 0) -> Tensor:
    """Per sample, the class that covers most pixels of ``class_map`` ``(N, h, w)``,
    ``background`` aside; values outside ``[0, num_classes)`` (an ignore index such as
    255) are not counted. A sample with nothing but background (or ignored pixels) gets
    ``background`` (class 0 when ``background`` is ``None``). Ties go to the lower class.

    Example::

        >>> import torch
        >>> frequent_class(torch.tensor([[[0, 0, 2], [2, 1, 0]]]), 3).tolist()
        [2]
    """
    flat = class_map.reshape(len(class_map), -1).long()
    valid = (flat >= 0) & (flat < num_classes)
    rows = torch.arange(len(flat), device=flat.device).unsqueeze(1) * num_classes
    counts = torch.bincount((flat + rows)[valid], minlength=len(flat) * num_classes
                            ).view(len(flat), num_classes)  # (N, C): no (N, pixels, C) one-hot
    if background is not None:
        counts[:, background] = -1
    classes = counts.argmax(1)
    if background is not None:
        none = counts.gather(1, classes.view(-1, 1)).squeeze(1) <= 0
        classes = torch.where(none, torch.full_like(classes, background), classes)
    return classes


@dataclass(frozen=True)
class SegmentationTarget(Target):
    """A segmentation model's class inside a region: the class's logits summed over the
    region's pixels.

    Attributes:
        classes: ``None`` (per sample the most frequent predicted class other than
            ``background``, see :func:`frequent_class`), an ``int`` for all, or ``(N,)``.
        regions: ``(N, H, W)`` bool (any size: resized to the output's by nearest), or
            ``None``: the pixels predicted as the class.
        background: the class left out of the choice, or ``None`` to count it.

    Example::

        >>> import torch
        >>> logits = torch.zeros(1, 2, 2, 2)
        >>> logits[0, 1, 0] = 3.0  # class 1 wins the top row
        >>> SegmentationTarget()(logits).tolist()
        [6.0]
    """

    classes: Tensor | int | None = None
    regions: Tensor | None = None
    background: int | None = 0

    def __call__(self, logits: Tensor) -> Tensor:
        if logits.dim() != 4:
            raise ValueError(
                f"task='segmentation' needs a per-pixel output (N, C, h, w), got "
                f"{tuple(logits.shape)}"
            )
        logits = class_logits(logits)
        n, num_classes, height, width = logits.shape
        if self.background is not None and not 0 <= self.background < num_classes:
            raise ValueError(
                f"background={self.background} is not a class of a model with {num_classes} "
                f"outputs (valid: 0..{num_classes - 1}, or None)"
            )
        predicted = logits.detach().argmax(1)
        if self.classes is None:
            classes = frequent_class(predicted, num_classes, self.background)
        else:
            classes = _classes_tensor(self.classes, n, logits.device)
            bad = (classes < 0) | (classes >= num_classes)
            if bad.any():
                raise ValueError(
                    f"target class {int(classes[bad][0])} is out of range for a model with "
                    f"{num_classes} outputs (valid: 0..{num_classes - 1})"
                )
        if self.regions is None:
            region = predicted == classes.view(n, 1, 1)
        else:
            region = resize_region(self.regions.to(logits.device), (height, width))
        picked = logits.gather(1, classes.view(n, 1, 1, 1).expand(n, 1, height, width))[:, 0]
        return (picked * region.to(picked.dtype)).sum(dim=(1, 2))

    def chunk(self, part: slice) -> SegmentationTarget:
        regions = self.regions[part] if self.regions is not None else None
        return SegmentationTarget(_part(self.classes, part), regions, self.background)


def resize_region(region: Tensor, size: tuple[int, ...]) -> Tensor:
    """Bool masks ``(N, H, W)`` at ``size`` (nearest); unchanged when they fit."""
    region = region.bool()
    if tuple(region.shape[-2:]) == tuple(size):
        return region
    resized = F.interpolate(region[:, None].float(), size=size, mode="nearest")
    return resized[:, 0] > 0.5


@dataclass(frozen=True)
class OutputTarget(Target):
    """A regression output: output ``index`` of ``(N, K)`` (or the only one of ``(N,)``).

    Example::

        >>> import torch
        >>> OutputTarget(1)(torch.tensor([[0.5, 2.0]])).tolist()
        [2.0]
    """

    index: int | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        flat = logits.reshape(len(logits), -1)
        if self.index is None:
            if flat.shape[1] != 1:
                raise ValueError(
                    f"task='regression' with {flat.shape[1]} outputs per sample (output "
                    f"{tuple(logits.shape)}): pass target=k to explain output k "
                    f"(0..{flat.shape[1] - 1})"
                )
            return flat[:, 0]
        if not 0 <= self.index < flat.shape[1]:
            raise ValueError(
                f"target={self.index} is out of range for a regression model with "
                f"{flat.shape[1]} outputs (valid: 0..{flat.shape[1] - 1})"
            )
        return flat[:, self.index]


@dataclass(frozen=True)
class TopLabelTarget(Target):
    """A multi-label model's top-scoring *true* label per sample (``labels`` ``(N, C)``
    0/1); a sample without any true label is explained at its top-scoring label.

    Example::

        >>> import torch
        >>> TopLabelTarget(torch.tensor([[1, 0, 1]]))(torch.tensor([[0.0, 5.0, 1.0]])).tolist()
        [1.0]
    """

    labels: Tensor

    def __call__(self, logits: Tensor) -> Tensor:
        return _gather(logits, top_label(logits, self.labels))

    def chunk(self, part: slice) -> TopLabelTarget:
        return TopLabelTarget(self.labels[part])


def top_label(logits: Tensor, labels: Tensor) -> Tensor:
    """Per sample, the true label (``labels`` ``(N, C)`` 0/1) with the highest logit; the
    highest logit of all for a sample without a true label."""
    if logits.dim() != 2 or tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"multi-label targets need an output (N, C) and 0/1 labels of the same shape, "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    true = labels.to(logits.device).bool()
    scores = logits.detach().float().masked_fill(~true, float("-inf"))
    none = ~true.any(dim=1)
    return torch.where(none, logits.detach().argmax(1), scores.argmax(1))


def _classes_tensor(targets: TargetSpec, n: int, device: torch.device) -> Tensor:
    if isinstance(targets, bool):
        raise TypeError(f"targets must be class indices (int), got a bool: {targets!r}")
    if isinstance(targets, numbers.Integral):
        return torch.full((n,), int(targets), dtype=torch.long, device=device)
    if isinstance(targets, Tensor):
        dtype = targets.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise TypeError(f"targets must be an integer tensor, got dtype {targets.dtype}")
        if targets.dim() == 0:
            return targets.to(device=device, dtype=torch.long).expand(n).clone()
        if targets.dim() != 1 or targets.numel() != n:
            raise ValueError(
                f"targets must have one class per sample: shape ({n},), got "
                f"{tuple(targets.shape)}"
            )
        classes = targets.to(device=device, dtype=torch.long)
        # labels made under inference mode (a validation batch) cannot index a tensor
        # that autograd saves; a copy made here, outside inference mode, can
        return classes.clone() if classes.is_inference() else classes
    if isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
        if len(targets) != n:
            raise ValueError(
                f"targets must have one class per sample: {n} values, got {len(targets)}"
            )
        bad = [t for t in targets if isinstance(t, bool) or not isinstance(t, numbers.Integral)]
        if bad:
            raise TypeError(f"targets must be ints (class indices), got {bad[0]!r}")
        return torch.tensor([int(t) for t in targets], dtype=torch.long, device=device)
    raise TypeError(
        "targets must be None (predicted class), an int, a sequence or 1-D tensor of N "
        f"ints, or a callable output -> (N,) scores; got {type(targets).__name__}: {targets!r}"
    )
