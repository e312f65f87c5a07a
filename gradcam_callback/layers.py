"""Resolve the layer whose activations a CAM explains.

A target layer is given as an ``nn.Module`` of the model, as its dotted name the way
``model.named_modules()`` spells it (``"layer4"``, ``"features.18"``, ``"blocks.11.norm1"``),
or as ``None`` to pick one automatically: the last module, in the order modules finish
their forward, whose output is a spatial map ``(N, C, h, w)`` with ``h * w > 1``.

Also here: :func:`vit_reshape_transform`, which turns a transformer's token sequence into
such a spatial map so that the CAM methods can treat it like a convolutional layer.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

LayerSpec = nn.Module | str | None
ReshapeTransform = Callable[[Tensor], Tensor]

__all__ = ["LayerSpec", "ReshapeTransform", "find_last_spatial_layer", "resolve_layer",
           "vit_reshape_transform"]


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


def vit_reshape_transform(
    num_prefix_tokens: int = 1, grid: tuple[int, int] | None = None
) -> ReshapeTransform:
    """Make a ``reshape_transform`` for vision-transformer token outputs.

    The returned function maps tokens ``(N, num_prefix_tokens + h*w, C)`` to a spatial
    map ``(N, C, h, w)``: it drops the prefix tokens (class token, register tokens) and
    lays the patch tokens out row by row.

    Args:
        num_prefix_tokens: tokens before the patch tokens (1 for a class token; 0 for
            models without one; 1 + registers for models with register tokens).
        grid: ``(h, w)`` of the patch grid; ``None`` infers a square grid.

    Example::

        >>> import torch
        >>> to_map = vit_reshape_transform(num_prefix_tokens=1)
        >>> to_map(torch.zeros(2, 1 + 14 * 14, 768)).shape
        torch.Size([2, 768, 14, 14])
    """
    if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
    if grid is not None and (len(grid) != 2 or min(grid) < 1):
        raise ValueError(f"grid must be (h, w) with h, w >= 1, got {grid!r}")

    def tokens_to_map(tokens: Tensor) -> Tensor:
        if tokens.dim() != 3:
            raise ValueError(
                f"vit_reshape_transform expects tokens (N, tokens, C), got shape "
                f"{tuple(tokens.shape)}"
            )
        patches = tokens[:, num_prefix_tokens:, :]
        count = patches.shape[1]
        if grid is None:
            side = math.isqrt(count)
            if side * side != count:
                raise ValueError(
                    f"{count} patch tokens (after dropping {num_prefix_tokens} prefix tokens "
                    f"of {tokens.shape[1]}) do not form a square grid; pass grid=(h, w) or "
                    "the right num_prefix_tokens"
                )
            h = w = side
        else:
            h, w = grid
            if h * w != count:
                raise ValueError(
                    f"grid={tuple(grid)} needs {h * w} patch tokens, got {count} "
                    f"(after dropping {num_prefix_tokens} prefix tokens)"
                )
        return patches.reshape(patches.shape[0], h, w, patches.shape[2]).permute(0, 3, 1, 2)

    return tokens_to_map
