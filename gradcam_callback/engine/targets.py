"""Which score a CAM explains.

A target spec is one of:

- ``None``: each sample's own highest logit (the predicted class);
- an ``int``: that class for every sample;
- a sequence or 1-D integer tensor of ``N`` classes, one per sample;
- a callable ``output -> (N,)`` scores, for anything that is not one-logit-per-class
  classification (segmentation: the summed logits of a class inside a region;
  regression: the output itself; a detection score...).

The score must be the pre-softmax value; the gradient of the summed scores is what the
CAM methods read.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

TargetFn = Callable[[Tensor], Tensor]
TargetSpec = int | Sequence[int] | Tensor | TargetFn | None
OutputTransform = Callable[[Any], Tensor]

__all__ = ["OutputTransform", "TargetSpec", "logits_from_output", "select_scores"]


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


def select_scores(targets: TargetSpec, logits: Tensor) -> Tensor:
    """Return the ``(N,)`` scores to differentiate, one per sample.

    Args:
        targets: the target spec (see the module docstring).
        logits: the model output as a tensor; ``(N, num_classes)`` unless ``targets``
            is a callable.

    Raises:
        ValueError: wrong number of targets, a class outside ``[0, num_classes)``, or a
            callable returning something other than ``N`` scores.
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
    if classes.is_inference():  # made under torch.inference_mode: autograd cannot save it
        classes = classes.clone()
    return logits.gather(1, classes.view(n, 1)).squeeze(1)


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
