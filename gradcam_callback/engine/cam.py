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
from gradcam_callback.engine.layers import (
    LayerSpec,
    choose_layer,
    probe_layout_hints,
    resolve_layer,
    run_eagerly,
    unwrap_compiled,
)
from gradcam_callback.engine.methods import CamMethod, get_method
from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.engine.targets import (
    OutputTransform,
    Target,
    TargetSpec,
    TaskName,
    check_task,
    logits_from_output,
    select_scores,
)
from gradcam_callback.engine.transforms import (
    AmbiguousReading,
    Reading,
    ReadingSpec,
    ReshapeTransform,
    check_reading,
    read_layer_output,
)
from gradcam_callback.ops import min_max, resize_maps

CamMethodName = Literal["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
OutputSize = Literal["input"] | None | tuple[int, ...]

__all__ = ["CamMethodName", "Explanation", "compute_cam", "explain_batch"]


class Explanation(NamedTuple):
    """The result of :func:`explain_batch`.

    Attributes:
        cams: float32 ``(N, h, w)`` maps, detached, on the inputs' device.
        logits: the model output (after ``output_transform``) from the same forward,
            detached, on the model's device.
        layer_name: the dotted name of the layer explained (useful with auto-detection;
            without the ``_orig_mod`` parts of a compiled model).
        reading: how its output was read as maps, e.g. ``"tokens, 1 prefix + 14x14 grid"``
            or ``"channels-first, 7x7 grid"``.
    """

    cams: Tensor
    logits: Tensor
    layer_name: str
    reading: str


def compute_cam(
    model: nn.Module,
    inputs: Tensor,
    target_layer: LayerSpec,
    targets: TargetSpec = None,
    *,
    method: CamMethodName | str = "gradcam",
    reshape_transform: ReadingSpec = "auto",
    output_size: OutputSize = "input",
    normalize: bool = True,
    output_transform: OutputTransform | None = None,
    batch_size: int | None = None,
    task: TaskName | str = "auto",
) -> Tensor:
    """Compute class activation maps for a batch, leaving the model exactly as it was.

    Args:
        inputs: ``(N, C, H, W)`` floating-point batch. Cast to the model's parameter
            dtype and moved to its device for the forward.
        model: any ``nn.Module``, also ``torch.compile``d (or with compiled submodules):
            the CAM runs it eagerly, without recompiling or running its compiled graph.
        target_layer: a submodule of ``model``, its dotted name (as
            ``model.named_modules()`` spells it; a compiled model's ``_orig_mod`` parts
            are optional), or ``None`` to choose one with a probe forward and backward:
            the last layer with maps that the target score flows through (on a CNN, the
            last spatial block; on a class-token ViT, the last block's pre-attention
            norm; see :mod:`~gradcam_callback.engine.layers`). If the layer runs several
            times in one forward, its last call is explained.
        targets: ``None`` (what each sample is predicted as), an ``int`` (that class,
            side or output for all), ``N`` ints (a sequence or 1-D tensor), a
            :class:`~gradcam_callback.engine.targets.Target` or a callable
            ``output -> (N,)`` scores. What ``None`` and the integers mean depends on
            ``task`` (the table in :mod:`~gradcam_callback.engine.targets`). Ignored by
            ``eigencam`` apart from validation.
        method: one of ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"``, ``"eigencam"`` (formulas in this module's docstring).
        reshape_transform: how to read the layer's output as maps: ``"auto"`` (channels-
            first, channels-last or tokens, recognised from the shape, the input size and
            the layer's stride), ``"nchw"``, ``"nhwc"``, ``"tokens"`` (``"vit"``; prefix
            tokens and grid inferred), ``"tokens:<n>"`` (``n`` prefix tokens), or a
            callable ``output -> (N, C, h, w)`` applied to activations and gradients
            alike. ``None`` means ``"auto"``. See
            :mod:`~gradcam_callback.engine.transforms`.
        output_size: ``"input"`` (the inputs' ``H, W``), ``None`` (the layer's own
            resolution) or ``(h, w)``.
        normalize: per-sample min-max scaling to ``[0, 1]`` after resizing.
        output_transform: picks the logits out of a model output that is not a tensor
            (a tuple or dict, e.g. with auxiliary heads). Not needed for outputs that
            carry ``logits`` (Hugging Face ``ModelOutput``, dicts, named tuples).
        batch_size: explain at most this many samples per forward (memory is set by the
            chunk, not by ``N``); ``None`` runs all ``N`` at once. Results are the same.
        task: ``"auto"`` (from the output's shape: ``(N, 1)`` binary, ``(N, C, h, w)``
            segmentation, else multiclass), ``"multiclass"``, ``"binary"``,
            ``"multilabel"``, ``"segmentation"`` or ``"regression"``: how ``targets`` are
            scored. A one-logit binary model's negative predictions are explained by
            ``-logit``, the evidence *for* the negative side.

    Returns:
        float32 tensor ``(N, h, w)``, detached, on the inputs' device.

    Raises:
        ValueError: an unknown method, reading or layer name, a bad ``output_size``,
            targets that do not fit the model output, a layer output that does not read
            as maps of the input (attention internals, a tensor that does not depend on
            the input) or reads more than one way (the message names the readings and how
            to choose), or a layer the forward never calls.
        TypeError: inputs, targets or layer of the wrong type.

    Side effects: none. Each submodule's ``training`` flag, every parameter's ``.grad``,
    BatchNorm running statistics, the global RNG states, the grad mode and the module
    hook dicts are as they were before the call, also when it raises. Works under
    ``torch.no_grad()`` and ``torch.inference_mode()``. A compiled model's graphs, guards
    and compile counters are untouched.

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
        task=task,
    ).cams


def explain_batch(
    model: nn.Module,
    inputs: Tensor,
    target_layer: LayerSpec,
    targets: TargetSpec = None,
    *,
    method: CamMethodName | str = "gradcam",
    reshape_transform: ReadingSpec = "auto",
    output_size: OutputSize = "input",
    normalize: bool = True,
    output_transform: OutputTransform | None = None,
    batch_size: int | None = None,
    task: TaskName | str = "auto",
) -> Explanation:
    """Like :func:`compute_cam`, but also return the logits of the same forward pass.

    For callers that show predictions next to the maps: one forward serves both; the
    result also names the layer and how its output was read.
    Arguments, errors and guarantees are those of :func:`compute_cam`.
    """
    cam_method = get_method(method)
    check_task(task)  # an unknown word fails before any forward
    spec = check_reading(reshape_transform)
    _check_inputs(inputs)
    _check_rank(model, inputs)
    _check_output_size(output_size, inputs.dim() - 2)
    batch_size = _check_batch_size(batch_size, len(inputs))
    model = unwrap_compiled(model)
    x = _to_model(inputs, model)
    size = inputs.shape[2:] if output_size == "input" else output_size

    with preserved_rng_state(x.device), eval_mode(model), torch.inference_mode(False):
        if x.is_inference():
            x = x.clone()  # inference tensors cannot take part in autograd
        reading: Reading | None = None
        if target_layer is None:
            first = slice(0, batch_size)
            layer_name, reading = choose_layer(
                model, x[first], _slice_targets(targets, first, len(x)),
                output_transform=output_transform, task=task)
            if spec != "auto":
                reading = None
        layer_name, layer = resolve_layer(model, layer_name if target_layer is None
                                          else target_layer)

        cams, logits = [], []
        for start in range(0, len(x), batch_size):
            chunk = slice(start, start + batch_size)
            chunk_cams, chunk_logits, reading = _explain_chunk(
                model, x[chunk], layer, layer_name, _slice_targets(targets, chunk, len(x)),
                cam_method, spec, reading, output_transform, task)
            with torch.autocast(x.device.type, enabled=False):
                if size is not None:
                    chunk_cams = resize_maps(chunk_cams, size)
                if normalize:
                    chunk_cams = min_max(chunk_cams)
            cams.append(chunk_cams.to(inputs.device))
            logits.append(chunk_logits)
        assert reading is not None
        return Explanation(torch.cat(cams), torch.cat(logits), layer_name, reading.describe())


def _explain_chunk(model: nn.Module, x: Tensor, layer: nn.Module, layer_name: str,
                   targets: TargetSpec, cam_method: CamMethod, spec: str | ReshapeTransform,
                   reading: Reading | None, output_transform: OutputTransform | None,
                   task: str = "auto") -> tuple[Tensor, Tensor, Reading]:
    """Raw maps (after ReLU, at the layer's resolution), logits and the reading, for one
    chunk; ``reading`` is decided on the first chunk and kept for the others."""
    with capture_layer_output(
        layer, layer_name, track_gradients=cam_method.needs_gradients
    ) as captured, torch.no_grad(), run_eagerly():
        output = model(x)
    if captured.activation is None:
        raise ValueError(
            f"target layer {layer_name!r} was not called during the forward pass of "
            f"{type(model).__name__}; choose a layer that the forward uses"
        )
    if reading is None:
        reading = _read(model, x, captured.activation, spec, layer, layer_name)
    logits = logits_from_output(output, output_transform)
    with torch.set_grad_enabled(cam_method.needs_gradients):
        scores = select_scores(targets, logits, task)
        grads = (
            _gradients(scores, captured.activation, layer_name)
            if cam_method.needs_gradients
            else None
        )
    with torch.autocast(x.device.type, enabled=False):
        cams = _maps(cam_method, captured.activation, grads, reading, layer_name, x.dim())
    return cams, logits.detach(), reading


def _read(model: nn.Module, x: Tensor, activation: Tensor, spec: str | ReshapeTransform,
          layer: nn.Module, layer_name: str) -> Reading:
    """How to read the layer's output; for token layouts that fit the input more than one
    way, what one more forward shows about the model's layouts decides."""
    size = tuple(x.shape[2:])
    try:
        return read_layer_output(activation, size, spec, layer_name=layer_name, module=layer,
                                 batch=len(x))
    except AmbiguousReading:
        if activation.dim() != 3 or len(size) != 2:
            raise
    return read_layer_output(activation, size, spec, layer_name=layer_name, module=layer,
                             batch=len(x), hints=probe_layout_hints(model, x))


def _slice_targets(targets: TargetSpec, chunk: slice, count: int) -> TargetSpec:
    """The part of per-sample targets (a sequence or 1-D tensor of ``count``, or a
    :class:`Target`) in ``chunk``."""
    if chunk == slice(0, count):
        return targets
    if isinstance(targets, Target):
        return targets.chunk(chunk)
    if callable(targets) and not isinstance(targets, Tensor):
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
    reading: Reading,
    layer_name: str,
    input_dims: int = 4,
) -> Tensor:
    acts = reading(activation.detach())
    grads = reading(grads) if grads is not None else None
    if acts.dim() != input_dims:
        want = {3: "(N, C, t)", 4: "(N, C, h, w)", 5: "(N, C, d, h, w)"}[input_dims]
        raise ValueError(
            f"layer {layer_name!r} outputs shape {tuple(activation.shape)} "
            f"({tuple(acts.shape)} after reshape_transform); CAM methods need spatial maps "
            f"{want} of the input's rank: make reshape_transform return them, or pass "
            "reshape_transform='auto'"
        )
    acts = acts.float()
    grads = grads.float() if grads is not None else None

    finite = torch.isfinite(acts).flatten(1).all(dim=1)
    if grads is not None:
        finite &= torch.isfinite(grads).flatten(1).all(dim=1)
    keep = finite.view(-1, *([1] * (acts.dim() - 1)))
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
        cams = torch.where(finite.view(-1, *([1] * (cams.dim() - 1))), cams, 0.0)
    return cams


def _check_inputs(inputs: object) -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() not in (3, 4, 5) or inputs.shape[0] < 1:
        raise ValueError(
            f"inputs must be a batch of signals (N, C, T), images (N, C, H, W) or volumes "
            f"(N, C, D, H, W) with N >= 1, got shape {tuple(inputs.shape)}; for a single "
            "sample use sample.unsqueeze(0)"
        )
    if not inputs.dtype.is_floating_point:
        raise TypeError(
            f"inputs must be floating point, got {inputs.dtype}; convert and normalise "
            "them as the model expects (e.g. images.float() / 255)"
        )


_KINDS = {3: "signals (N, C, T)", 4: "images (N, C, H, W)", 5: "volumes (N, C, D, H, W)"}
_CONVOLUTIONS = ((nn.Conv1d, 3), (nn.Conv2d, 4), (nn.Conv3d, 5))


def _check_rank(model: nn.Module, inputs: Tensor) -> None:
    """Inputs of the rank the model's first convolution takes (when it has one): a single
    image ``(C, H, W)`` fed to an image model is not read as a batch of signals."""
    for module in model.modules():
        for kind, dims in _CONVOLUTIONS:
            if isinstance(module, kind):
                if inputs.dim() != dims:
                    single = (" (one sample? use sample.unsqueeze(0))"
                              if inputs.dim() == dims - 1 else "")
                    raise ValueError(
                        f"inputs must be a batch of {_KINDS[dims]} for a model whose first "
                        f"convolution is a {kind.__name__}, got shape {tuple(inputs.shape)}"
                        f"{single}"
                    )
                return


def _check_output_size(output_size: object, rank: int = 2) -> None:
    if output_size is None or output_size == "input":
        return
    if (
        isinstance(output_size, (tuple, list))
        and len(output_size) == rank
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in output_size)
    ):
        return
    want = {1: "(t,)", 2: "(h, w)", 3: "(d, h, w)"}.get(rank, "a size")
    raise ValueError(
        f"output_size must be 'input', None (the layer's resolution) or {want} positive "
        f"ints (the input's rank), got {output_size!r}"
    )


def _to_model(inputs: Tensor, model: nn.Module) -> Tensor:
    """The inputs on the model's device and in its floating dtype (a no-op if they match)."""
    reference = next((p for p in model.parameters() if p.is_floating_point()), None)
    if reference is None:
        return inputs
    return inputs.to(device=reference.device, dtype=reference.dtype)
