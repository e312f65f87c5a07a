"""``compute_cam`` and ``explain_batch``: class activation maps for a batch, exact and
without side effects on the model.

One forward runs under ``torch.no_grad()``; the target layer's hook switches gradient
recording on, so autograd records only the layer-to-score part (see
:mod:`~gradcam_callback.engine.capture`). The method (:mod:`~gradcam_callback.engine.methods`)
combines activations and gradients into a map; then ReLU, bilinear resizing
(``align_corners=False``) and, with ``normalize=True``, per-sample min-max scaling to
``[0, 1]``. A map whose maximum equals its minimum (an all-zero map, say) becomes all zeros.

Scale: min-max scaling makes gradcam, xgradcam, hirescam, layercam and eigencam
invariant to multiplying the scores by a positive constant. Grad-CAM++ is not, by its
definition: eq. 19's ``alpha`` depends on the gradient's magnitude.
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from gradcam_callback._checks import check_int
from gradcam_callback.engine.capture import capture_layer_output
from gradcam_callback.engine.layers import LayerSpec, find_last_spatial_layer, resolve_layer
from gradcam_callback.engine.methods import CamMethod, get_method
from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.engine.targets import (
    OutputTransform,
    TargetSpec,
    logits_from_output,
    select_scores,
)
from gradcam_callback.engine.transforms import ReshapeTransform
from gradcam_callback.ops import min_max, resize_maps

CamMethodName = Literal["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
OutputSize = Literal["input"] | None | tuple[int, int]

__all__ = ["CamMethodName", "Explanation", "compute_cam", "explain_batch"]


class Explanation(NamedTuple):
    """The result of :func:`explain_batch`.

    Attributes:
        cams: float32 ``(N, h, w)`` maps, detached, on the inputs' device.
        logits: the model output (after ``output_transform``) from the same forward,
            detached, on the model's device.
        layer_name: the dotted name of the layer explained (useful with auto-detection).
    """

    cams: Tensor
    logits: Tensor
    layer_name: str


def compute_cam(
    model: nn.Module,
    inputs: Tensor,
    target_layer: LayerSpec,
    targets: TargetSpec = None,
    *,
    method: CamMethodName = "gradcam",
    reshape_transform: ReshapeTransform | None = None,
    output_size: OutputSize = "input",
    normalize: bool = True,
    output_transform: OutputTransform | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Compute class activation maps for a batch, leaving the model exactly as it was.

    Args:
        model: any ``nn.Module``; it runs in eval mode for this call only.
        inputs: ``(N, C, H, W)`` floating-point batch. Cast to the model's parameter
            dtype and moved to its device for the forward.
        target_layer: a submodule of ``model``, its dotted name (as
            ``model.named_modules()`` spells it), or ``None`` for the last layer with a
            spatial output (found with one probe forward). If the layer runs several
            times in one forward, its last call is explained.
        targets: ``None`` (each sample's predicted class), an ``int`` (that class for
            all), ``N`` ints (a sequence or 1-D tensor), or a callable
            ``output -> (N,)`` scores. Ignored by ``eigencam`` apart from validation.
        method: one of ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"``, ``"eigencam"`` (formulas in this module's docstring).
        reshape_transform: maps a non-spatial layer output to ``(N, C, h, w)``,
            applied to activations and gradients alike; see
            :func:`~gradcam_callback.vit_reshape_transform` for vision transformers.
        output_size: ``"input"`` (the inputs' ``H, W``), ``None`` (the layer's own
            resolution) or ``(h, w)``.
        normalize: per-sample min-max scaling to ``[0, 1]`` after resizing.
        output_transform: picks the logits out of a model output that is not a tensor
            (a tuple or dict, e.g. with auxiliary heads).
        batch_size: explain at most this many samples per forward (memory is set by the
            chunk, not by ``N``); ``None`` runs all ``N`` at once. Results are the same.

    Returns:
        float32 tensor ``(N, h, w)``, detached, on the inputs' device.

    Raises:
        ValueError: an unknown method or layer name, a bad ``output_size``, targets that
            do not fit the model output, a layer output that is not ``(N, C, h, w)``
            without ``reshape_transform``, or a layer the forward never calls.
        TypeError: inputs, targets or layer of the wrong type.

    Side effects: none. Each submodule's ``training`` flag, every parameter's ``.grad``,
    BatchNorm running statistics, the global RNG states, the grad mode and the module
    hook dicts are as they were before the call, also when it raises. Works under
    ``torch.no_grad()`` and ``torch.inference_mode()``.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> cams = compute_cam(model, torch.randn(2, 3, 64, 64), "layer4")
        >>> cams.shape, cams.dtype, bool(cams.min() >= 0), bool(cams.max() <= 1)
        (torch.Size([2, 64, 64]), torch.float32, True, True)
    """
    return explain_batch(
        model,
        inputs,
        target_layer,
        targets,
        method=method,
        reshape_transform=reshape_transform,
        output_size=output_size,
        normalize=normalize,
        output_transform=output_transform,
        batch_size=batch_size,
    ).cams


def explain_batch(
    model: nn.Module,
    inputs: Tensor,
    target_layer: LayerSpec,
    targets: TargetSpec = None,
    *,
    method: CamMethodName = "gradcam",
    reshape_transform: ReshapeTransform | None = None,
    output_size: OutputSize = "input",
    normalize: bool = True,
    output_transform: OutputTransform | None = None,
    batch_size: int | None = None,
) -> Explanation:
    """Like :func:`compute_cam`, but also return the logits of the same forward pass.

    For callers that show predictions next to the maps: one forward serves both.
    Arguments, errors and guarantees are those of :func:`compute_cam`.
    """
    cam_method = get_method(method)
    _check_inputs(inputs)
    _check_output_size(output_size)
    batch_size = _check_batch_size(batch_size, len(inputs))
    x = _to_model(inputs, model)
    size = inputs.shape[-2:] if output_size == "input" else output_size

    with preserved_rng_state(x.device), eval_mode(model), torch.inference_mode(False):
        if x.is_inference():
            x = x.clone()  # inference tensors cannot take part in autograd
        if target_layer is None:
            layer_name = find_last_spatial_layer(model, x[:batch_size])
            _, layer = resolve_layer(model, layer_name)
        else:
            layer_name, layer = resolve_layer(model, target_layer)

        cams, logits = [], []
        for start in range(0, len(x), batch_size):
            chunk = slice(start, start + batch_size)
            chunk_cams, chunk_logits = _explain_chunk(
                model, x[chunk], layer, layer_name, _slice_targets(targets, chunk, len(x)),
                cam_method, reshape_transform, output_transform)
            with torch.autocast(x.device.type, enabled=False):
                if size is not None:
                    chunk_cams = resize_maps(chunk_cams, size)
                if normalize:
                    chunk_cams = min_max(chunk_cams)
            cams.append(chunk_cams.to(inputs.device))
            logits.append(chunk_logits)
        return Explanation(torch.cat(cams), torch.cat(logits), layer_name)


def _explain_chunk(model: nn.Module, x: Tensor, layer: nn.Module, layer_name: str,
                   targets: TargetSpec, cam_method: CamMethod,
                   reshape_transform: ReshapeTransform | None,
                   output_transform: OutputTransform | None) -> tuple[Tensor, Tensor]:
    """Raw maps (after ReLU, at the layer's resolution) and logits for one chunk."""
    with capture_layer_output(
        layer, layer_name, track_gradients=cam_method.needs_gradients
    ) as captured, torch.no_grad():
        output = model(x)
    if captured.activation is None:
        raise ValueError(
            f"target layer {layer_name!r} was not called during the forward pass of "
            f"{type(model).__name__}; choose a layer that the forward uses"
        )
    logits = logits_from_output(output, output_transform)
    with torch.set_grad_enabled(cam_method.needs_gradients):
        scores = select_scores(targets, logits)
        grads = (
            _gradients(scores, captured.activation, layer_name)
            if cam_method.needs_gradients
            else None
        )
    with torch.autocast(x.device.type, enabled=False):
        cams = _maps(cam_method, captured.activation, grads, reshape_transform, layer_name)
    return cams, logits.detach()


def _slice_targets(targets: TargetSpec, chunk: slice, count: int) -> TargetSpec:
    """The part of per-sample targets (a sequence or 1-D tensor of ``count``) in ``chunk``."""
    if chunk == slice(0, count) or (callable(targets) and not isinstance(targets, Tensor)):
        return targets
    if isinstance(targets, Tensor) and targets.dim() == 1 and len(targets) == count:
        return targets[chunk]
    if isinstance(targets, (list, tuple)) and len(targets) == count:
        return targets[chunk]
    return targets  # None, an int, or a bad value that select_scores reports


def _check_batch_size(batch_size: object, count: int) -> int:
    if batch_size is None:
        return max(count, 1)
    return check_int("batch_size", batch_size, minimum=1)  # type: ignore[return-value]


def _gradients(scores: Tensor, activation: Tensor, layer_name: str) -> Tensor:
    if not scores.requires_grad:
        raise ValueError(
            f"the target scores do not depend on layer {layer_name!r} through autograd "
            "(does the model detach or run part of its forward under torch.no_grad()?); "
            "choose a layer on the path to the output, or method='eigencam'"
        )
    (grads,) = torch.autograd.grad(scores.float().sum(), activation, allow_unused=True)
    if grads is None:
        raise ValueError(
            f"the target scores do not depend on layer {layer_name!r}; choose a layer on "
            "the path from the input to the scores"
        )
    return grads


def _maps(
    cam_method: CamMethod,
    activation: Tensor,
    grads: Tensor | None,
    reshape_transform: ReshapeTransform | None,
    layer_name: str,
) -> Tensor:
    acts = activation.detach()
    if reshape_transform is not None:
        acts = reshape_transform(acts)
        grads = reshape_transform(grads) if grads is not None else None
    if acts.dim() != 4:
        raise ValueError(
            f"layer {layer_name!r} outputs shape {tuple(activation.shape)}"
            + ("" if reshape_transform is None
               else f" ({tuple(acts.shape)} after reshape_transform)")
            + "; CAM methods need a spatial map (N, C, h, w). For token outputs (a vision "
            "transformer: (N, 1 + h*w, C)) pass reshape_transform=vit_reshape_transform(); "
            "otherwise choose a convolutional layer."
        )
    acts = acts.float()
    grads = grads.float() if grads is not None else None

    finite = torch.isfinite(acts).flatten(1).all(dim=1)
    if grads is not None:
        finite &= torch.isfinite(grads).flatten(1).all(dim=1)
    keep = finite.view(-1, 1, 1, 1)
    acts = torch.where(keep, acts, 0.0)
    grads = torch.where(keep, grads, 0.0) if grads is not None else None

    cams = cam_method.combine(acts, grads).relu()
    finite &= torch.isfinite(cams).flatten(1).all(dim=1)
    if not finite.all():
        bad = (~finite).nonzero().flatten().tolist()
        warnings.warn(
            f"non-finite values (NaN or inf) at layer {layer_name!r} for samples {bad}; "
            "their maps are set to zero",
            RuntimeWarning,
            stacklevel=4,
        )
        cams = torch.where(finite.view(-1, 1, 1), cams, 0.0)
    return cams


def _check_inputs(inputs: object) -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() != 4 or inputs.shape[0] < 1:
        raise ValueError(
            f"inputs must be a batch of images (N, C, H, W) with N >= 1, got shape "
            f"{tuple(inputs.shape)}; for a single image use image.unsqueeze(0)"
        )
    if not inputs.dtype.is_floating_point:
        raise TypeError(
            f"inputs must be floating point, got {inputs.dtype}; convert and normalise "
            "them as the model expects (e.g. images.float() / 255)"
        )


def _check_output_size(output_size: object) -> None:
    if output_size is None or output_size == "input":
        return
    if (
        isinstance(output_size, (tuple, list))
        and len(output_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in output_size)
    ):
        return
    raise ValueError(
        f"output_size must be 'input', None (the layer's resolution) or (h, w) positive "
        f"ints, got {output_size!r}"
    )


def _to_model(inputs: Tensor, model: nn.Module) -> Tensor:
    """The inputs on the model's device and in its floating dtype (a no-op if they match)."""
    reference = next((p for p in model.parameters() if p.is_floating_point()), None)
    if reference is None:
        return inputs
    return inputs.to(device=reference.device, dtype=reference.dtype)
