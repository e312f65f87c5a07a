"""The CAM methods: how a layer's activations and gradients combine into a map.

Class activation maps as pure tensor functions: batched, exact, and without side effects.

Notation, per sample: ``A`` is the target layer's output *as it left the layer*, shape
``(C, h, w)`` (``(C, t)`` for a signal, ``(C, d, h, w)`` for a volume: every formula runs
over all spatial positions alike); ``G = dS/dA`` is the gradient of the sample's target
score ``S`` (a pre-softmax logit, or what a callable target returns). Sums over ``k`` run
over the channels, over ``ij`` over the spatial positions, and ``Z`` is their number.

=============  =========================================================================
method         map before ReLU
=============  =========================================================================
gradcam        ``sum_k w_k A_k`` with ``w_k = (1/Z) sum_ij G_kij``
gradcam++      ``sum_k w_k A_k`` with ``w_k = sum_ij alpha_kij relu(G_kij)`` and
               ``alpha = G^2 / (2 G^2 + (sum_ij A_kij) G^3 + 1e-6)`` (paper eq. 19)
xgradcam       ``sum_k w_k A_k`` with ``w_k = sum_ij G_kij A_kij / (sum_ij A_kij + 1e-7)``
hirescam       ``sum_k G_k * A_k``
layercam       ``sum_k relu(G_k) * A_k``
eigencam       projection of the centred activations (rows = positions, columns =
               channels) on their first principal component; no gradients. The
               component is fixed only up to sign: we choose the sign that makes the
               projection correlate positively with the channel sum of ``A``, so the
               map is high where the layer is most active.
=============  =========================================================================

Then ReLU, resizing (linear, bilinear or trilinear by the rank; ``align_corners=False``)
and, with ``normalize=True``,
per-sample min-max scaling to ``[0, 1]``. A map whose maximum equals its minimum (an
all-zero map, say) becomes all zeros.

Scale: min-max scaling makes gradcam, xgradcam, hirescam, layercam and eigencam
invariant to multiplying the scores by a positive constant. Grad-CAM++ is not, by its
definition: eq. 19's ``alpha`` depends on the gradient's magnitude.

A method is a function ``combine(A, G) -> (N, *S)`` over ``A``, ``G`` of shape
``(N, C, *S)`` (``G`` is ``None`` for gradient-free methods), registered under a name.
:func:`register_method` adds one; every entry point (``compute_cam``, the callback, the
CLI) reads the names from this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gradcam_callback._checks import check_callable, check_choice

__all__ = ["CAM_METHODS", "CamMethod", "available_methods", "get_method", "register_method"]

Combine = Callable[[Tensor, Tensor | None], Tensor]


def _spatial(tensor: Tensor) -> tuple[int, ...]:
    """The spatial dims of ``(N, C, *S)``: 2 for a signal, 2-3 for an image, 2-4 for a
    volume."""
    return tuple(range(2, tensor.dim()))


def _gradcam(acts: Tensor, grads: Tensor) -> Tensor:
    weights = grads.mean(dim=_spatial(grads), keepdim=True)
    return (weights * acts).sum(dim=1)


def _gradcam_plus_plus(acts: Tensor, grads: Tensor) -> Tensor:
    grads_sq = grads.square()
    acts_sum = acts.sum(dim=_spatial(acts), keepdim=True)
    alpha = grads_sq / (2 * grads_sq + acts_sum * grads_sq * grads + 1e-6)
    weights = (alpha * grads.clamp(min=0)).sum(dim=_spatial(grads), keepdim=True)
    return (weights * acts).sum(dim=1)


def _xgradcam(acts: Tensor, grads: Tensor) -> Tensor:
    weights = (grads * acts).sum(dim=_spatial(acts), keepdim=True) / (
        acts.sum(dim=_spatial(acts), keepdim=True) + 1e-7
    )
    return (weights * acts).sum(dim=1)


def _hirescam(acts: Tensor, grads: Tensor) -> Tensor:
    return (grads * acts).sum(dim=1)


def _layercam(acts: Tensor, grads: Tensor) -> Tensor:
    return (grads.clamp(min=0) * acts).sum(dim=1)


def _eigencam(acts: Tensor, _grads: Tensor | None) -> Tensor:
    n, c = acts.shape[:2]
    positions = acts.reshape(n, c, -1).transpose(1, 2)  # (N, positions, C)
    centred = positions - positions.mean(dim=1, keepdim=True)
    projection = _first_component_projection(centred)  # (N, hw)
    activity = positions.sum(dim=2)
    agreement = (projection * (activity - activity.mean(dim=1, keepdim=True))).sum(dim=1)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
    return (projection * sign.unsqueeze(1)).reshape(n, *acts.shape[2:])


def _first_component_projection(centred: Tensor) -> Tensor:
    """``X v1`` for each ``X`` of ``(N, rows, cols)``, ``v1`` its first right singular vector.

    Equal to ``u1 * s1`` of the SVD, but found as the top eigenvector of the smaller Gram
    matrix (``X X^T`` or ``X^T X``) with one batched ``eigh``: several times faster than a
    full batched SVD, which computes every component to use one. The Gram matrix is
    formed in float64 where the device has it, so squaring the spectrum costs no accuracy.
    """
    wide = centred.shape[1] <= centred.shape[2]
    dtype = torch.float32 if centred.device.type == "mps" else torch.float64
    x = centred.to(dtype)
    if wide:
        values, vectors = torch.linalg.eigh(x @ x.transpose(1, 2))  # (N, rows, rows)
        projection = vectors[:, :, -1] * values[:, -1].clamp(min=0).sqrt().unsqueeze(1)
    else:
        _, vectors = torch.linalg.eigh(x.transpose(1, 2) @ x)  # (N, cols, cols)
        projection = (x @ vectors[:, :, -1:]).squeeze(-1)
    result: Tensor = projection.to(centred.dtype)
    return result


@dataclass(frozen=True)
class CamMethod:
    """A registered CAM method.

    Attributes:
        name: the name it is registered under.
        combine: ``(A, G) -> (N, h, w)`` map before ReLU, ``A`` and ``G`` ``(N, C, h, w)``
            float32 (``G`` is ``None`` when ``needs_gradients`` is False).
        needs_gradients: whether the method reads ``G``; without, no backward is run.
        title: how pictures name the method.
    """

    name: str
    combine: Combine
    needs_gradients: bool
    title: str


_REGISTRY: dict[str, CamMethod] = {}


def register_method(name: str, combine: Combine, *, needs_gradients: bool = True,
                    title: str | None = None, replace: bool = False) -> CamMethod:
    """Make a CAM method available by ``name`` everywhere a method is chosen.

    Args:
        name: the new method's name.
        combine: ``(A, G) -> (N, h, w)``, the map before ReLU (see :class:`CamMethod`).
        needs_gradients: whether ``combine`` reads ``G``.
        title: how pictures name it (default: ``name``).
        replace: allow replacing an existing method of that name.

    Raises:
        ValueError: the name is taken and ``replace`` is False.
        TypeError: ``combine`` is not callable or ``name`` is not a string.

    Example::

        >>> def gradient_energy(acts, grads):
        ...     return (grads.square() * acts).sum(dim=1)
        >>> register_method("gradient-energy", gradient_energy).name
        'gradient-energy'
        >>> "gradient-energy" in available_methods()
        True
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name={name!r}: must be a non-empty string")
    check_callable("combine", combine, allow_none=False)
    if name in _REGISTRY and not replace:
        raise ValueError(f"name={name!r}: a method of that name exists; pass replace=True")
    method = CamMethod(name, combine, bool(needs_gradients), title or name)
    _REGISTRY[name] = method
    return method


def available_methods() -> tuple[str, ...]:
    """The names of all registered methods, the six built-in ones first."""
    return tuple(_REGISTRY)


def get_method(name: object) -> CamMethod:
    """The registered method ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones and the closest).
        TypeError: ``name`` is not a string.
    """
    return _REGISTRY[check_choice("method", name, _REGISTRY)]


_BUILT_IN: tuple[tuple[str, Callable[..., Tensor], bool, str], ...] = (
    ("gradcam", _gradcam, True, "Grad-CAM"),
    ("gradcam++", _gradcam_plus_plus, True, "Grad-CAM++"),
    ("xgradcam", _xgradcam, True, "XGrad-CAM"),
    ("hirescam", _hirescam, True, "HiRes-CAM"),
    ("layercam", _layercam, True, "Layer-CAM"),
    ("eigencam", _eigencam, False, "Eigen-CAM"),
)
for _name, _combine, _grads, _title in _BUILT_IN:
    register_method(_name, _combine, needs_gradients=_grads, title=_title)

CAM_METHODS: tuple[str, ...] = available_methods()
"""The six built-in method names (see :func:`available_methods` for added ones)."""
