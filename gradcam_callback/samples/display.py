"""How to show the model's inputs: undo the dataset's own normalisation when it has one.

Per-image min-max scaling stretches every image to full contrast, which erases exactly
what a model may key on when a class is told by a global tint or brightness. So the
callback shows inputs, in this order of preference: with the ``mean``/``std`` given to
it; with those of a torchvision ``Normalize`` found in the validation dataset's transform;
otherwise min-max scaled over the whole batch jointly, so differences between images
stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Display", "choose_display", "find_normalize"]

_MAX_DEPTH = 6


@dataclass(frozen=True)
class Display:
    """The display settings: ``mean``/``std`` (or ``None``), ``joint`` scaling, and a line
    saying where they come from."""

    mean: Sequence[float] | None
    std: Sequence[float] | None
    joint: bool
    source: str

    @classmethod
    def batch_scaled(cls) -> Display:
        """No known normalisation: min-max over the whole batch jointly."""
        return cls(None, None, joint=True,
                   source="no mean/std given and no Normalize in the validation dataset: "
                          "inputs are min-max scaled over the whole batch jointly (pass "
                          "mean= and std= to show them as they were before normalisation)")


def find_normalize(dataset: Any) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of the first torchvision ``Normalize`` (v1 or v2) in a dataset's
    transforms, or ``None``.

    Looks through ``transform``, ``transforms`` (a ``Compose``'s list or a torchvision
    dataset's ``StandardTransform``), the ``dataset`` of wrappers such as ``Subset``, and
    the children of ``nn.Sequential`` pipelines. Recognised by duck typing (a class named
    ``Normalize`` with ``mean`` and ``std``), so torchvision need not be installed.

    Example::

        >>> import torchvision.transforms as T
        >>> class Data:
        ...     transform = T.Compose([T.ToTensor(), T.Normalize([0.5], [0.25])])
        >>> find_normalize(Data())
        ([0.5], [0.25])
    """
    seen: set[int] = set()

    def visit(node: Any, depth: int) -> tuple[list[float], list[float]] | None:
        if node is None or depth > _MAX_DEPTH or id(node) in seen:
            return None
        seen.add(id(node))
        if type(node).__name__ == "Normalize" and hasattr(node, "mean") and hasattr(node, "std"):
            return _floats(node.mean), _floats(node.std)
        if isinstance(node, (list, tuple)):
            children: list[Any] = list(node)
        else:
            children = [getattr(node, key, None) for key in ("transform", "transforms", "dataset")]
            if type(node).__name__ == "Sequential":
                children += list(node.children())
        for child in children:
            if isinstance(child, (str, bytes)):
                continue
            found = visit(child, depth + 1)
            if found is not None:
                return found
        return None

    return visit(dataset, 0)


def choose_display(mean: Sequence[float] | None, std: Sequence[float] | None,
                   dataset: Any) -> Display:
    """The callback's display settings for a validation dataset (see the module docstring)."""
    if mean is not None and std is not None:
        return Display(mean, std, joint=False, source="mean/std given")
    found = find_normalize(dataset)
    if found is not None:
        return Display(found[0], found[1], joint=False,
                       source=f"mean={found[0]}, std={found[1]} from the validation dataset's "
                              "Normalize transform")
    return Display.batch_scaled()


def _floats(value: Any) -> list[float]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value]
