"""Resolve the layer whose activations a CAM explains, or choose one.

A target layer is given as an ``nn.Module`` of the model, as its dotted name the way
``model.named_modules()`` spells it (``"layer4"``, ``"features.18"``, ``"blocks.11.norm1"``),
or as ``None`` to let :func:`choose_layer` pick one.

Compiled models: ``torch.compile`` wraps a module in an ``OptimizedModule`` whose
submodules are named ``_orig_mod.<name>``; ``"layer4"`` and ``"_orig_mod.layer4"`` name the
same layer, and the name reported is the one without ``_orig_mod``. :func:`run_eagerly`
runs compiled modules as plain PyTorch for the duration of a CAM, so hooks fire and the
compiled graph is neither used nor recompiled.

The automatic choice (one probe forward and one backward, on the first samples):

1. Every module's output, in the order the modules *finish* their forward (a container
   such as ``resnet.layer4`` comes after its own children and wins over them), from the
   last backwards.
2. A candidate outputs one entry per input that reads as maps with more than one position
   (see :mod:`~gradcam_callback.engine.transforms`; grids must fit the input), and depends
   on the input. Attention modules and everything inside them (q/k/v projections,
   per-head tensors, attention probabilities) are never candidates; nor are modules that
   pass their input through unchanged in eval mode (``Identity``, dropout, ``Permute``),
   so the module that computed the values is named.
3. The first candidate through whose grid positions the target score flows wins: a
   vision transformer's last norm and last block are skipped when only the class token
   reaches the head, which leaves the last block's pre-attention norm (timm
   ``blocks.11.norm1``, torchvision ``encoder.layers.encoder_layer_11.ln_1``, Hugging
   Face ``vit.encoder.layer.11.layernorm_before``). On CNNs this is the last block with a
   spatial output (ResNet ``layer4``), as before; on Swin, the final norm.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from gradcam_callback.engine.scopes import eval_mode, preserved_rng_state
from gradcam_callback.engine.targets import (
    OutputTransform,
    Target,
    TargetSpec,
    logits_from_output,
    output_task,
    select_scores,
)
from gradcam_callback.engine.transforms import LayoutHints, Reading, read_layer_output

LayerSpec = nn.Module | str | None

__all__ = [
    "LayerSpec",
    "canonical_name",
    "choose_layer",
    "earlier_spatial_layer",
    "find_last_spatial_layer",
    "is_attention",
    "probe_layout_hints",
    "probe_outputs",
    "resolve_layer",
    "run_eagerly",
    "unwrap_compiled",
]

_COMPILED_PREFIX = "_orig_mod"
_ATTENTION_NAMES = frozenset({"attn", "attention", "self_attn", "self_attention", "cross_attn"})
_PASS_THROUGH_NAMES = frozenset({"Identity", "Permute", "DropPath", "StochasticDepth"})


def canonical_name(name: str) -> str:
    """``name`` without the ``_orig_mod`` parts that ``torch.compile`` wrappers add."""
    return ".".join(part for part in name.split(".") if part != _COMPILED_PREFIX)


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) holds, else ``model``."""
    while isinstance(getattr(model, _COMPILED_PREFIX, None), nn.Module):
        model = getattr(model, _COMPILED_PREFIX)
    return model


@contextmanager
def run_eagerly() -> Iterator[None]:
    """Run ``torch.compile``d modules and functions as plain PyTorch inside the block.

    The compiler's stance is ``"force_eager"`` for the block and back to what it was
    afterwards: nothing is compiled, no compiled graph runs, and the compile caches and
    counters are untouched.
    """
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    context = set_stance("force_eager") if set_stance is not None else nullcontext()
    with context:
        yield


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Canonical name -> module; a compiled wrapper's name maps to the module it holds."""
    modules: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        modules[canonical_name(name)] = unwrap_compiled(module)
    return modules


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given by module or name.

    Args:
        model: the model that contains the layer (compiled or not).
        layer: a submodule of ``model`` or its dotted name; ``_orig_mod`` parts of the
            name are optional.

    Returns:
        The name without ``_orig_mod`` parts, and the module (for a compiled submodule,
        the module the wrapper holds).

    Raises:
        ValueError: the name is not a module of ``model`` (the message lists the three
            closest names), or the module object is not part of ``model``.
        TypeError: ``layer`` is neither a string nor an ``nn.Module``.
    """
    model_name = type(unwrap_compiled(model)).__name__
    if isinstance(layer, str):
        modules = _named_modules(model)
        name = canonical_name(layer)
        if name in modules:
            return name, modules[name]
        names = [name for name in modules if name]
        closest = difflib.get_close_matches(name, names, n=3, cutoff=0.0)
        suggestion = ", ".join(repr(n) for n in closest) or "(the model has no submodules)"
        raise ValueError(
            f"target_layer {layer!r} is not a module of {model_name}. "
            f"Closest names: {suggestion}. "
            "Valid names are those of model.named_modules()."
        )
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return canonical_name(name), unwrap_compiled(module)
        raise ValueError(
            f"target_layer is a {type(layer).__name__} that is not a submodule of "
            f"{model_name}; pass a module from model.modules() or its dotted name."
        )
    raise TypeError(
        f"target_layer must be an nn.Module, a dotted module name (str) or None, "
        f"got {type(layer).__name__}: {layer!r}"
    )


def is_attention(name: str, module: nn.Module) -> bool:
    """An attention module: its attribute or class name mentions attention (``attn``,
    ``self_attention``, ``WindowAttention``, ``AttentionDownsample``), and it is neither a
    normalisation (``attn_norm``) nor a whole block, layer or stage."""
    attribute = name.rsplit(".", 1)[-1].lower()
    cls = type(module).__name__.lower()
    if "norm" in cls or isinstance(module, nn.LayerNorm) or any(
        word in cls for word in ("block", "layer", "stage")
    ):
        return False
    return any(word in text for word in ("attn", "attention") for text in (attribute, cls))


def _passes_through(module: nn.Module) -> bool:
    """Modules that hand their input on unchanged in eval mode (or only re-lay it out)."""
    return isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd)) or (
        type(module).__name__ in _PASS_THROUGH_NAMES
    )


def probe_outputs(model: nn.Module, inputs: Tensor) -> list[tuple[str, nn.Module, object]]:
    """Every named module's output in one forward without gradients, in the order the
    modules finish; names are canonical (no ``_orig_mod``). The hooks are gone afterwards;
    the caller is responsible for eval mode and the RNG state."""
    outputs: list[tuple[str, nn.Module, object]] = []

    def make_hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, _args: object, output: object) -> None:
            outputs.append((name, module, output))

        return record

    handles = [module.register_forward_hook(make_hook(canonical_name(name)))
               for name, module in unwrap_compiled(model).named_modules()]
    try:
        with torch.no_grad(), run_eagerly():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def probe_layout_hints(model: nn.Module, inputs: Tensor) -> LayoutHints:
    """What one forward (no gradients) shows about the model's token layouts: the grids
    of its convolutions (a patch embedding's) and its prefix count."""
    outputs = probe_outputs(model, inputs)
    return LayoutHints.from_outputs(((module, out) for _, module, out in outputs),
                                    (inputs.shape[-2], inputs.shape[-1]))


def earlier_spatial_layer(model: nn.Module, inputs: Tensor, layer_name: str,
                          min_cells: int = 4) -> str | None:
    """The last layer to finish before ``layer_name`` whose output is channels-first maps
    with at least ``min_cells`` cells on each side, or ``None``: where to look when
    ``layer_name``'s maps are too coarse. One probe forward; no side effects (eval mode,
    RNG states and hooks as they were).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(8), nn.Flatten())
        >>> earlier_spatial_layer(net, torch.zeros(1, 3, 16, 16), "1")
        '0'
    """
    with preserved_rng_state(inputs.device), eval_mode(model):
        outputs = probe_outputs(model, inputs)
    names = [name for name, _, _ in outputs]
    target = canonical_name(layer_name)
    if target not in names:
        return None
    for name, _, out in reversed(outputs[: names.index(target)]):
        if (name and isinstance(out, Tensor) and out.dim() == inputs.dim()
                and min(out.shape[2:]) >= min_cells
                and not target.startswith(name + ".")):
            return name
    return None


def choose_layer(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetSpec = None,
    *,
    output_transform: OutputTransform | None = None,
    task: str = "auto",
) -> tuple[str, Reading]:
    """Choose the layer to explain and how to read it (module docstring: the rules).

    One probe forward with gradients recorded and one backward of the target scores. The
    caller is responsible for eval mode and the RNG state (``compute_cam`` does both).

    Args:
        model: the model (compiled or not).
        inputs: ``(N, C, H, W)`` on the model's device, in its dtype.
        targets: the target spec of the CAM that follows (its scores decide which layers
            the score flows through).
        output_transform: as for :func:`~gradcam_callback.compute_cam`.
        task: how ``targets`` are scored (as for :func:`~gradcam_callback.compute_cam`).

    Returns:
        The layer's dotted name and its :class:`~gradcam_callback.engine.transforms.Reading`.

    Raises:
        ValueError: no module's output reads as maps of the input.
    """
    model = unwrap_compiled(model)
    finished: dict[str, tuple[int, nn.Module, Any, bool]] = {}
    order = iter(range(1 << 62))
    attention_depth = [0]  # > 0 while an attention module runs: its parts are internals

    def make_hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, _args: object, output: object) -> None:
            finished[name] = (next(order), module, output, attention_depth[0] > 0)

        return record

    def enter(*_: object) -> None:
        attention_depth[0] += 1

    def leave(*_: object) -> None:
        attention_depth[0] -= 1

    handles = []
    for name, module in model.named_modules():
        if not name or isinstance(getattr(module, _COMPILED_PREFIX, None), nn.Module):
            continue
        handles.append(module.register_forward_hook(make_hook(canonical_name(name))))
        if is_attention(canonical_name(name), module):
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    x = inputs.detach().clone().requires_grad_(inputs.dtype.is_floating_point)
    try:
        with torch.enable_grad(), run_eagerly():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()

    size = tuple(inputs.shape[2:])
    in_order = sorted(finished.items(), key=lambda item: item[1][0])
    hints = (LayoutHints.from_outputs(((m, o) for _, (_, m, o, _) in in_order), size)
             if len(size) == 2 else None)
    inputs_differ = len(inputs) > 1 and not bool((inputs == inputs[:1]).all())
    candidates: list[tuple[str, Tensor, Reading]] = []
    for name, (_, module, out, in_attention) in reversed(in_order):
        if in_attention or _passes_through(module):
            continue
        if not _is_candidate_output(out, len(inputs), inputs_differ, inputs.dim()):
            continue
        try:
            reading = read_layer_output(out, size, "auto", layer_name=name, module=module,
                                        hints=hints, batch=len(inputs), strict=True)
        except ValueError:
            continue  # not maps of the input, or ambiguous: not chosen automatically
        if math.prod(reading.grid) > 1:
            candidates.append((name, out, reading))
    custom = ((callable(targets) and not isinstance(targets, (Tensor, Target)))
              or bool(getattr(targets, "custom", False)))
    classes = None if custom else _segmentation_classes(output, output_transform, task)
    if classes is not None:  # a segmentation model: not its logit maps (the map of a class
        # would be that class's own logits), but the features they are computed from
        features = [c for c in candidates if int(c[2](c[1]).shape[1]) != classes]
        candidates = features or candidates
    if not candidates:
        seen = ", ".join(
            f"{n}: {tuple(o.shape)}" for n, (_, _, o, _) in in_order[-3:] if isinstance(o, Tensor)
        ) or "no tensor outputs"
        raise ValueError(
            "target_layer=None found no layer whose output reads as maps of the input "
            f"((N, C, h, w), (N, h, w, C) or tokens; last outputs seen: {seen}). Pass "
            "target_layer explicitly, with reshape_transform=<callable output -> "
            "(N, C, h, w)> if its layout is another one."
        )
    return _first_reached(candidates, output, targets, output_transform, task)


def _segmentation_classes(output: Any, output_transform: OutputTransform | None,
                          task: str) -> int | None:
    """The number of classes of a segmentation model's output, or ``None`` for the others
    (or an output no task reads)."""
    try:
        logits = logits_from_output(output, output_transform)
        if output_task(task, logits) != "segmentation" or logits.dim() != 4:
            return None
    except (TypeError, ValueError):
        return None
    return int(logits.shape[1])


def _is_candidate_output(output: object, batch: int, inputs_differ: bool,
                         input_dims: int = 4) -> bool:
    dims = (3, 4) if input_dims == 4 else (input_dims,)  # images: tokens or maps
    if not isinstance(output, Tensor) or output.dim() not in dims:
        return False
    if not output.dtype.is_floating_point or output.shape[0] != batch:
        return False
    if output.dim() == 3 and input_dims == 4 and output.shape[2] == 1:
        return False  # one value per position: a pooled (N, C, 1), not tokens
    if batch > 1 and output.stride(0) == 0:
        return False  # expanded over the batch: the same for every input
    if inputs_differ:
        flat = output.detach().flatten(1)
        if bool((flat == flat[:1]).all()):
            return False  # does not depend on the input
    return True


def _first_reached(candidates: list[tuple[str, Tensor, Reading]], output: Any,
                   targets: TargetSpec, output_transform: OutputTransform | None,
                   task: str = "auto") -> tuple[str, Reading]:
    """The first candidate with a non-zero gradient of the scores at its grid positions.

    Gradients are taken for groups of candidates of doubling size, from the output back,
    so the backward goes little further than the candidate that wins (a CNN's last block:
    through the head only), not down to the input.
    """
    try:
        scores = select_scores(targets, logits_from_output(output, output_transform), task)
    except ValueError:
        # no score can be formed (e.g. targets=None on a segmentation-style (N, K, H, W)
        # output): choose by shape alone; the CAM itself then reports the targets error
        return candidates[0][0], candidates[0][2]
    tracked = [(name, out, reading) for name, out, reading in candidates if out.requires_grad]
    if not scores.requires_grad or not tracked:
        return candidates[0][0], candidates[0][2]  # no gradients to tell: the last one
    total = scores.float().sum()
    start, size = 0, 1
    while start < len(tracked):
        group = tracked[start:start + size]
        grads = torch.autograd.grad(total, [out for _, out, _ in group], allow_unused=True,
                                    retain_graph=start + size < len(tracked))
        for (name, _, reading), grad in zip(group, grads, strict=True):
            if grad is not None and bool(reading(grad).detach().abs().amax() > 0):
                return name, reading
        start, size = start + size, size * 2
    return candidates[0][0], candidates[0][2]


def find_last_spatial_layer(model: nn.Module, inputs: Tensor, targets: TargetSpec = None, *,
                            output_transform: OutputTransform | None = None) -> str:
    """The name of the layer :func:`choose_layer` picks (kept for compatibility)."""
    return choose_layer(model, inputs, targets, output_transform=output_transform)[0]
