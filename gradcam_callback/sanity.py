"""The sanity check: do the maps change when what the model learned is taken away?

Adebayo et al. ("Sanity checks for saliency maps", 2018) found saliency maps that barely
change when the model's weights are randomised: such maps follow the input (edges, bright
spots), not what the model learned. The check here re-initialises the model's *head*
(the last ``layers`` modules with parameters of their own, in registration order: a
ResNet's ``fc``), explains the same samples for the same targets (each sample's class,
side or label as the trained model explains it), and compares the two maps of each
sample by their Spearman rank correlation at the layer's own resolution (average ranks
for ties). Near 1: the maps hardly depend on the head (:data:`WARN_ABOVE` warns).

The user's model is never left changed: the head's parameters and buffers are saved,
re-initialised in place (with the global RNG states restored afterwards, and a fixed
seed, so the same head every time), and copied back bit for bit, also when explaining
fails. No copy of the model is made (a copy of a large model costs its memory again).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gradcam_callback.engine.scopes import preserved_rng_state

__all__ = ["WARN_ABOVE", "SanityResult", "head_modules", "rank_correlation",
           "reinitialised_head", "sanity_check"]

WARN_ABOVE = 0.8
"""A mean rank correlation above this warns: the maps barely change with a random head."""
SEED = 20181023
"""The seed of the random head (the same head at every check)."""

Explain = Callable[[nn.Module, Tensor], Tensor]
"""``(model, inputs) -> maps (N, *s)``: the same layer and targets for both models."""


@dataclass(frozen=True)
class SanityResult:
    """The sanity check's outcome.

    Attributes:
        correlations: ``(N,)`` each sample's rank correlation (NaN where a map is constant).
        reinitialised: the names of the modules re-initialised.
    """

    correlations: Tensor
    reinitialised: list[str] = field(default_factory=list)

    @property
    def defined(self) -> Tensor:
        return self.correlations[~self.correlations.isnan()]

    @property
    def mean(self) -> float | None:
        """The mean over the samples with a defined correlation, or ``None``."""
        values = self.defined
        return float(values.mean()) if len(values) else None

    def scalars(self) -> dict[str, float]:
        """``sanity/rank_correlation`` with ``_std`` and ``_ci95`` (those defined)."""
        values = self.defined.double()
        if not len(values):
            return {}
        out = {"sanity/rank_correlation": float(values.mean())}
        if len(values) > 1:
            std = float(values.std(unbiased=False))
            out["sanity/rank_correlation_std"] = std
            out["sanity/rank_correlation_ci95"] = 1.959964 * std / math.sqrt(len(values))
        return out

    def warning(self, threshold: float = WARN_ABOVE) -> str | None:
        """The warning when the maps barely change, else ``None``."""
        mean = self.mean
        if mean is None or mean <= threshold:
            return None
        return (f"the maps barely change when the model's head ({', '.join(self.reinitialised)}) "
                f"is re-initialised: mean rank correlation {mean:.2f} > {threshold}. These "
                "maps follow the input, not what the model learned; explain a later layer, "
                "or use a gradient method (Eigen-CAM ignores the head by design)")


def head_modules(model: nn.Module, layers: int = 1) -> list[tuple[str, nn.Module]]:
    """The last ``layers`` modules (registration order) with parameters of their own and a
    ``reset_parameters`` method.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
        >>> [name for name, _ in head_modules(net)], [n for n, _ in head_modules(net, 2)]
        (['3'], ['0', '3'])
    """
    found = [(name, module) for name, module in model.named_modules()
             if any(True for _ in module.parameters(recurse=False))
             and callable(getattr(module, "reset_parameters", None))]
    return found[-layers:] if layers > 0 else []


@contextmanager
def reinitialised_head(model: nn.Module, layers: int = 1) -> Iterator[list[str]]:
    """Re-initialise the head in place for the ``with`` block, then restore it exactly
    (parameters and buffers copied back; the global RNG states as they were).

    Yields:
        The names of the modules re-initialised.
    """
    head = head_modules(model, layers)
    saved = [[tensor.detach().clone() for tensor in _tensors(module)] for _, module in head]
    try:
        with torch.no_grad(), preserved_rng_state(_device(model)):
            torch.manual_seed(SEED)
            for _, module in head:
                module.reset_parameters()  # type: ignore[operator]
        yield [name for name, _ in head]
    finally:
        with torch.no_grad():
            for (_, module), tensors in zip(head, saved, strict=True):
                for tensor, value in zip(_tensors(module), tensors, strict=True):
                    tensor.copy_(value)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample Spearman rank correlation of maps ``(N, *s)`` (average ranks for ties);
    NaN where either map is constant.

    Example::

        >>> a = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
        >>> round(rank_correlation(a, a).item(), 6), round(rank_correlation(a, -a).item(), 6)
        (1.0, -1.0)
    """
    ranks_a = torch.stack([_average_ranks(x) for x in a.detach().float().flatten(1)])
    ranks_b = torch.stack([_average_ranks(x) for x in b.detach().float().flatten(1)])
    ranks_a = ranks_a - ranks_a.mean(1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(1, keepdim=True)
    norms = ranks_a.norm(dim=1) * ranks_b.norm(dim=1)
    return torch.where(norms > 0, (ranks_a * ranks_b).sum(1) / norms.clamp(min=1e-12),
                       float("nan")).float()


def sanity_check(model: nn.Module, inputs: Tensor, explain: Explain, *,
                 layers: int = 1) -> SanityResult:
    """Explain ``inputs`` with the trained model and with its head re-initialised (the
    module docstring); the model is restored exactly before this returns.

    Args:
        model: the model (left as it was: parameters, buffers, RNG states).
        inputs: the samples, on the model's device.
        explain: ``(model, inputs) -> maps``, the same layer and the same targets for both
            (e.g. ``compute_cam`` with the trained model's predicted classes).
        layers: how many modules of the head to re-initialise.

    Raises:
        ValueError: the model has no module with parameters to re-initialise.
    """
    trained = explain(model, inputs).detach().float().cpu()
    if not head_modules(model, layers):
        raise ValueError("the sanity check re-initialises the model's head, and the model "
                         "has no module with parameters and reset_parameters()")
    with reinitialised_head(model, layers) as names:
        random = explain(model, inputs).detach().float().cpu()
    return SanityResult(rank_correlation(trained, random), names)


def _tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(recurse=False), *module.buffers(recurse=False)]


def _device(model: nn.Module) -> torch.device | None:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else None


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks 0..n-1 of ``values``, tied values sharing the mean of their ranks."""
    ordered, order = values.sort()
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True,
                                                  return_counts=True)
    ends = counts.cumsum(0).double()
    means = ends - (counts.double() + 1) / 2
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = means[inverse]
    return ranks
