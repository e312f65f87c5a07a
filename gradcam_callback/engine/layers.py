"""Resolve the layer whose activations a CAM explains.

A target layer is given as an ``nn.Module`` of the model, as its dotted name the way
``model.named_modules()`` spells it (``"layer4"``, ``"features.18"``, ``"blocks.11.norm1"``),
or as ``None`` to pick one automatically: the last module, in the order modules finish
their forward, whose output is a spatial map ``(N, C, h, w)`` with ``h * w > 1``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import Tensor, nn

LayerSpec = nn.Module | str | None

__all__ = ["LayerSpec", "find_last_spatial_layer", "resolve_layer"]


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a layer given by module or name.

    Args:
        model: the model that contains the layer.
        layer: a submodule of ``model`` or its dotted name.

    Raises:
        ValueError: the name is not a module of ``model`` (the message lists the three
            closest names), or the module object is not part of ``model``.
        TypeError: ``layer`` is neither a string nor an ``nn.Module``.
    """
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer in modules:
            return layer, modules[layer]
        names = [name for name in modules if name]
        closest = difflib.get_close_matches(layer, names, n=3, cutoff=0.0)
        suggestion = ", ".join(repr(n) for n in closest) or "(the model has no submodules)"
        raise ValueError(
            f"target_layer {layer!r} is not a module of {type(model).__name__}. "
            f"Closest names: {suggestion}. "
            "Valid names are those of model.named_modules()."
        )
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(
            f"target_layer is a {type(layer).__name__} that is not a submodule of "
            f"{type(model).__name__}; pass a module from model.modules() or its dotted name."
        )
    raise TypeError(
        f"target_layer must be an nn.Module, a dotted module name (str) or None, "
        f"got {type(layer).__name__}: {layer!r}"
    )


def find_last_spatial_layer(model: nn.Module, inputs: Tensor) -> str:
    """Name of the last module whose output is a spatial map, found by one probe forward.

    Modules are ordered by when their forward *finishes*, so a container such as
    ``resnet.layer4`` comes after its own children and wins over them. The model itself
    is never chosen. The probe runs under ``torch.no_grad()``; the caller is responsible
    for eval mode and RNG state (``compute_cam`` does both).

    Raises:
        ValueError: no module produced an output of shape ``(N, C, h, w)`` with ``h*w > 1``.
    """
    finished: list[tuple[str, tuple[int, ...]]] = []
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, _args: object, output: object) -> None:
            if isinstance(output, Tensor):
                finished.append((name, tuple(output.shape)))

        return record

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()

    for name, shape in reversed(finished):
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            return name
    seen = ", ".join(f"{n}: {tuple(s)}" for n, s in finished[-3:]) or "no tensor outputs"
    raise ValueError(
        "target_layer=None found no layer with a spatial (N, C, h, w) output "
        f"(last outputs seen: {seen}). Pass target_layer explicitly; for a vision "
        "transformer also pass reshape_transform=vit_reshape_transform()."
    )
