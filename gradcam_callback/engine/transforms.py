"""Read a layer's output as spatial maps ``(N, C, h, w)``.

CAM methods combine activations and gradients laid out channels-first. Layers lay their
outputs out in one of three ways, and a *reading* says which:

=============  ===========================  =============================================
reading        layer output                 typical layers
=============  ===========================  =============================================
``"nchw"``     ``(N, C, h, w)``             CNNs; ConvNeXt, EfficientNet, MaxViT stages
``"nhwc"``     ``(N, h, w, C)``             Swin stages and norms (timm, torchvision)
``"tokens"``   ``(N, prefix + h*w, C)``     ViT, DeiT, BEiT, MLP-Mixer blocks and norms;
                                            ``prefix`` counts class, distillation and
                                            register tokens (dropped)
=============  ===========================  =============================================

``"auto"`` (the default everywhere) recognises the layout from the output's shape, the
input's height and width and the layer's stride: a grid ``(h, w)`` *fits* an ``H x W``
input when one integer stride ``s`` gives ``h = round(H / s)`` and ``w = round(W / s)``
with the same rounding (down or up) for both sides. Square and non-square inputs alike.

- A 3-D output is a token sequence; the prefix count (0 to 16, fewer than the patches)
  and the grid are the ones that fit. When several fit (small grids), the grid the model
  itself produced earlier (its patch embedding's output) decides.
- A 4-D output is channels-last when only ``(h, w, C)`` fits, channels-first otherwise;
  when both fit (``C`` equal to the grid's side), the layer's own modules decide (a
  ``Conv2d`` or ``BatchNorm2d`` makes channels, a ``LayerNorm``/``Linear`` over the last
  axis makes channels-last).
- A reading that stays ambiguous raises a ``ValueError`` naming both readings and the
  ``reshape_transform`` value that picks each.

Attention internals are never read as maps: attention probabilities (non-negative rows
summing to one) and per-head tensors ``(N, heads, tokens, head_dim)`` raise an error, and
so does a tensor whose batch size is not the input's (a relative position bias).

A ``reshape_transform`` may also be any callable ``output -> (N, C, h, w)``, applied to
activations and gradients alike (:func:`vit_reshape_transform` makes one for tokens).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ReshapeTransform = Callable[[Tensor], Tensor]
ReadingSpec = str | ReshapeTransform | None

READINGS: tuple[str, ...] = ("auto", "nchw", "nhwc", "tokens", "vit")
"""The named readings (``"vit"`` is an alias of ``"tokens"``; ``"tokens:<n>"`` fixes the
prefix count)."""

MAX_PREFIX_TOKENS = 16
"""The most tokens ``"auto"`` and ``"tokens"`` consider before the patch tokens."""

__all__ = [
    "MAX_PREFIX_TOKENS",
    "READINGS",
    "AmbiguousReading",
    "LayoutHints",
    "Reading",
    "ReadingSpec",
    "ReshapeTransform",
    "check_reading",
    "grid_fits",
    "read_layer_output",
    "token_layouts",
    "vit_reshape_transform",
]

_LAYOUT_WORDS = {"nchw": "channels-first", "nhwc": "channels-last", "tokens": "tokens"}


@dataclass(frozen=True)
class Reading:
    """How one layer's output is read as ``(N, C, h, w)`` maps (``(N, C, t)`` for a
    signal, ``(N, C, d, h, w)`` for a volume).

    Attributes:
        layout: ``"nchw"`` (channels first), ``"nhwc"`` (channels last), ``"tokens"``,
            or ``"custom"`` (a callable).
        grid: the maps' spatial size, ``(h, w)`` (``(t,)``, ``(d, h, w)``).
        prefix: tokens before the patch tokens (``"tokens"`` only).
        transform: the user's callable (``"custom"`` only).
    """

    layout: str
    grid: tuple[int, ...]
    prefix: int = 0
    transform: ReshapeTransform | None = None

    def __call__(self, output: Tensor) -> Tensor:
        """``output`` as ``(N, C, h, w)``: a view where the layout allows one."""
        if self.layout == "nchw":
            return output
        if self.layout == "nhwc":
            return output.movedim(-1, 1)
        if self.layout == "tokens":
            h, w = self.grid
            patches = output[:, self.prefix:, :]
            return patches.reshape(patches.shape[0], h, w, patches.shape[2]).permute(0, 3, 1, 2)
        assert self.transform is not None
        return self.transform(output)

    def describe(self) -> str:
        """A short description, e.g. ``"tokens, 1 prefix + 14x14 grid"``."""
        grid = ("x".join(map(str, self.grid)) + " grid" if len(self.grid) != 1
                else f"{self.grid[0]} steps")
        if self.layout == "tokens":
            return f"tokens, {self.prefix} prefix + {grid}" if self.prefix else f"tokens, {grid}"
        if self.layout == "custom":
            name = getattr(self.transform, "__name__", type(self.transform).__name__)
            return f"reshape_transform {name}, {grid}"
        return f"{_LAYOUT_WORDS[self.layout]}, {grid}"


def check_reading(value: object, name: str = "reshape_transform") -> str | ReshapeTransform:
    """``value`` as a reading: a named one (``None`` is ``"auto"``, ``"vit"`` is ``"tokens"``)
    or a callable.

    Raises:
        ValueError: an unknown name (the message lists the valid ones and the closest).
        TypeError: neither a string, a callable nor ``None``.
    """
    if value is None:
        return "auto"
    if callable(value) and not isinstance(value, str):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"{name}={value!r}: must be a reading name ({_valid_words()}) or a callable "
            f"output -> (N, C, h, w), got {type(value).__name__}"
        )
    if value == "vit":
        return "tokens"
    if value in READINGS:
        return value
    prefix = _fixed_prefix(value)
    if prefix is not None:
        return f"tokens:{prefix}"
    close = difflib.get_close_matches(value, READINGS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"{name}={value!r}: valid readings are {_valid_words()}, or a callable "
        f"output -> (N, C, h, w).{hint}"
    )


def _valid_words() -> str:
    return ("'auto', 'nchw', 'nhwc', 'tokens', 'tokens:<prefix count>' and 'vit' "
            "(= 'tokens')")


def _fixed_prefix(value: str) -> int | None:
    head, sep, count = value.partition(":")
    if head in ("tokens", "vit") and sep and count.isdigit():
        return int(count)
    return None


def grid_fits(grid: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether maps of ``grid = (h, w)`` can come from an ``H x W`` input by one stride.

    True when an integer stride ``s >= 1`` gives ``h = H // s`` and ``w = W // s``, or
    ``h = ceil(H / s)`` and ``w = ceil(W / s)`` (convolutions and patch embeddings round
    both sides the same way).
    """
    h, w = grid
    height, width = size
    if h < 1 or w < 1 or h > height or w > width:
        return False
    low = max(1, height // (h + 1))
    high = height // max(h - 1, 1) + 1
    for stride in range(low, high + 1):
        if height // stride == h and width // stride == w:
            return True
        if -(-height // stride) == h and -(-width // stride) == w:
            return True
    return False


def token_layouts(count: int, size: tuple[int, int],
                  prefix: int | None = None) -> list[tuple[int, tuple[int, int]]]:
    """Every ``(prefix, (h, w))`` with ``prefix + h*w = count`` whose grid fits the input.

    Without ``prefix``: 0 to :data:`MAX_PREFIX_TOKENS` prefix tokens, fewer than the patch
    tokens, and a grid of more than one position.
    """
    prefixes: Iterable[int] = (
        range(min(MAX_PREFIX_TOKENS, count - 1) + 1) if prefix is None else (prefix,)
    )
    layouts = []
    for p in prefixes:
        patches = count - p
        if patches < 1 or (prefix is None and (patches < 2 or p >= patches)):
            continue
        for h in range(1, math.isqrt(patches) + 1):
            if patches % h:
                continue
            for grid in {(h, patches // h), (patches // h, h)}:
                if grid_fits(grid, size):
                    layouts.append((p, grid))
    return sorted(layouts)


def read_layer_output(
    output: Tensor,
    input_size: tuple[int, ...],
    spec: str | ReshapeTransform,
    *,
    layer_name: str,
    module: nn.Module | None = None,
    hints: LayoutHints | None = None,
    batch: int | None = None,
    strict: bool = False,
) -> Reading:
    """Decide how to read one layer's output as maps.

    Args:
        output: the layer's output (activation).
        input_size: the input's ``(H, W)`` (``(T,)`` for signals, ``(D, H, W)`` for
            volumes: their layers are read channels-first, or channels-last with
            ``"nhwc"``; tokens are read for images only).
        spec: a reading from :func:`check_reading`.
        layer_name: for error messages.
        module: the layer, whose own modules decide between channels-first and
            channels-last when both fit.
        hints: what the model's forward showed (its convolutions' grids, its prefix
            count), to decide between token layouts that all fit.
        batch: the input's batch size; an output with another batch size is refused.
        strict: read 4-D outputs only when their grid fits the input (the automatic
            layer choice); otherwise a 4-D output whose grid roughly fits is read
            channels-first.

    Raises:
        ValueError: the output cannot be read as maps of the input with this reading
            (attention internals, a tensor that does not depend on the input, a shape
            that fits no layout), or stays ambiguous (the message names the readings and
            how to choose). An :class:`AmbiguousReading` is a ``ValueError``.
    """
    shape = tuple(output.shape)
    rank = len(input_size)
    if callable(spec):
        maps = spec(output)
        grid = tuple(maps.shape[2:]) if maps.dim() == rank + 2 else (0,) * rank
        return Reading("custom", grid, transform=spec)
    if batch is not None and output.dim() >= 1 and shape[0] != batch:
        raise ValueError(
            f"layer {layer_name!r} outputs shape {shape}, whose first dimension is not the "
            f"batch ({batch} inputs): it does not hold one map per input (a position bias or "
            "windowed tensor?); choose a layer that outputs one entry per input"
        )
    if rank != 2:
        if spec == "auto" and module is not None and output.dim() == rank + 2:
            hint = _layout_hint(module, shape, last_dim_norm=rank == 1)
            spec = "nhwc" if hint == "nhwc" else spec
        return _read_nd(output, input_size, spec, layer_name, strict)
    image_size = (int(input_size[0]), int(input_size[1]))
    if output.dim() == 4 and _is_attention_probabilities(output):
        raise ValueError(
            f"layer {layer_name!r} outputs attention probabilities {shape} (non-negative rows "
            "summing to 1): they are not feature maps; choose the block's normalisation layer "
            "(e.g. 'blocks.11.norm1') instead"
        )
    if spec == "nchw":
        _need_dims(output, 4, spec, layer_name)
        return Reading("nchw", (shape[2], shape[3]))
    if spec == "nhwc":
        _need_dims(output, 4, spec, layer_name)
        return Reading("nhwc", (shape[1], shape[2]))
    if spec.startswith("tokens"):
        _need_dims(output, 3, spec, layer_name)
        return _read_tokens(shape, image_size, _fixed_prefix(spec), layer_name, hints,
                            forced=True)
    # auto
    if output.dim() == 3:
        return _read_tokens(shape, image_size, None, layer_name, hints, forced=False)
    if output.dim() == 4:
        return _read_4d(shape, image_size, module, layer_name, strict)
    raise ValueError(
        f"layer {layer_name!r} outputs shape {shape}; CAM methods need spatial maps: "
        "(N, C, h, w), (N, h, w, C) or tokens (N, prefix + h*w, C). Choose another layer "
        "(target_layer=None picks one), or pass reshape_transform=<callable output -> "
        "(N, C, h, w)>"
    )


@dataclass(frozen=True)
class LayoutHints:
    """What one forward of the model says about its token layouts.

    Attributes:
        grids: the grids ``(h, w)`` its convolutions output (a patch embedding's grid).
        prefixes: the prefix counts of its token outputs whose grid is one of ``grids``
            (the tokens right after the patch embedding), which later, downsampled token
            outputs keep.
    """

    grids: frozenset[tuple[int, int]] = frozenset()
    prefixes: frozenset[int] = frozenset()

    @classmethod
    def from_outputs(cls, outputs: Iterable[tuple[nn.Module, object]],
                     size: tuple[int, int]) -> LayoutHints:
        """Hints from ``(module, output)`` pairs of one forward on an input of ``size``."""
        outputs = list(outputs)
        grids = frozenset(
            (out.shape[2], out.shape[3]) for module, out in outputs
            if isinstance(module, nn.modules.conv._ConvNd) and isinstance(out, Tensor)
            and out.dim() == 4
        )
        prefixes = set()
        for _, out in outputs:
            if isinstance(out, Tensor) and out.dim() == 3 and out.shape[2] > 1:
                seen = [p for p, grid in token_layouts(out.shape[1], size) if grid in grids]
                if len(seen) == 1:
                    prefixes.add(seen[0])
        return cls(grids, frozenset(prefixes))

    def narrow(self, layouts: list[tuple[int, tuple[int, int]]]
               ) -> list[tuple[int, tuple[int, int]]]:
        """The layouts that agree with the hints: a known grid, else a known prefix count."""
        by_grid = [layout for layout in layouts if layout[1] in self.grids]
        if len(by_grid) == 1:
            return by_grid
        by_prefix = [layout for layout in by_grid or layouts if layout[0] in self.prefixes]
        return by_prefix or by_grid or layouts


class AmbiguousReading(ValueError):
    """Several readings fit a layer's output; ``readings`` lists them."""

    def __init__(self, message: str, readings: Sequence[Reading]) -> None:
        super().__init__(message)
        self.readings = list(readings)


def _read_nd(output: Tensor, size: tuple[int, ...], spec: str, layer_name: str,
             strict: bool) -> Reading:
    """A signal's or a volume's layer: channels-first ``(N, C, *S)`` (``"auto"``,
    ``"nchw"``) or channels-last ``(N, *S, C)`` (``"nhwc"``), ``S`` of the input's rank."""
    shape, rank = tuple(output.shape), len(size)
    kind = {1: "signal (N, C, T)", 3: "volume (N, C, D, H, W)"}.get(rank, f"{rank}-D input")
    if spec.startswith("tokens"):
        raise ValueError(f"reshape_transform={spec!r} reads image tokens; a {kind} layer is "
                         "read channels-first ('auto', 'nchw') or channels-last ('nhwc')")
    grid = shape[1:-1] if spec == "nhwc" else shape[2:]
    fits = (output.dim() == rank + 2 and all(0 < g <= s for g, s in zip(grid, size,
                                                                        strict=True)))
    if not fits and not (output.dim() == rank + 2 and not strict and spec != "auto"):
        want = "(N, " + ", ".join(["C", *"DHW"[3 - rank:]] if rank == 3 else ["C", "T"]) + ")"
        raise ValueError(
            f"layer {layer_name!r} outputs shape {shape}: not maps {want} of a {kind} input "
            f"of size {tuple(size)} read "
            f"{'channels-last' if spec == 'nhwc' else 'channels-first'}. "
            "Choose another layer (target_layer=None picks one), or pass "
            "reshape_transform=<callable output -> (N, C, *S)>"
        )
    return Reading("nhwc" if spec == "nhwc" else "nchw", tuple(int(g) for g in grid))


def _need_dims(output: Tensor, dims: int, spec: str, layer_name: str) -> None:
    if output.dim() != dims:
        want = "(N, prefix + h*w, C)" if dims == 3 else (
            "(N, C, h, w)" if spec == "nchw" else "(N, h, w, C)")
        raise ValueError(
            f"reshape_transform={spec!r} reads {want}, but layer {layer_name!r} outputs shape "
            f"{tuple(output.shape)}; use reshape_transform='auto'"
        )


def _read_tokens(shape: tuple[int, ...], size: tuple[int, int], prefix: int | None,
                 layer_name: str, hints: LayoutHints | None, forced: bool) -> Reading:
    count = shape[1]
    layouts = token_layouts(count, size, prefix)
    if not layouts and forced and prefix is not None and count > prefix:
        side = math.isqrt(count - prefix)
        if side * side == count - prefix:  # a square grid, whatever the input (a crop, say)
            layouts = [(prefix, (side, side))]
    if len(layouts) > 1 and hints is not None:
        layouts = hints.narrow(layouts)
    readings = [Reading("tokens", grid, p) for p, grid in layouts]
    if len(readings) == 1:
        return readings[0]
    if not readings:
        fixed = "" if prefix is None else f" after {prefix} prefix tokens"
        raise ValueError(
            f"layer {layer_name!r} outputs shape {shape}: {count} tokens{fixed} do not form a "
            f"grid of patches of a {size[0]}x{size[1]} input with up to {MAX_PREFIX_TOKENS} "
            "prefix tokens. Choose another layer (target_layer=None picks one), or pass "
            "reshape_transform=vit_reshape_transform(num_prefix_tokens=..., grid=(h, w))"
        )
    raise AmbiguousReading(_ambiguous_message(layer_name, shape, readings), readings)


def _read_4d(shape: tuple[int, ...], size: tuple[int, int], module: nn.Module | None,
             layer_name: str, strict: bool) -> Reading:
    first_grid, last_grid = (shape[2], shape[3]), (shape[1], shape[2])
    first, last = Reading("nchw", first_grid), Reading("nhwc", last_grid)
    first_fits, last_fits = grid_fits(first_grid, size), grid_fits(last_grid, size)
    if first_fits and last_fits:
        hint = _layout_hint(module, shape) if module is not None else None
        if hint is not None:
            return first if hint == "nchw" else last
        raise AmbiguousReading(_ambiguous_message(layer_name, shape, [first, last]),
                               [first, last])
    if last_fits:
        return last
    if first_fits or _roughly_fits(first_grid, size, strict):
        return first
    raise ValueError(
        f"layer {layer_name!r} outputs shape {shape}, which is not a grid of maps of a "
        f"{size[0]}x{size[1]} input read channels-first or channels-last (a per-head "
        "attention tensor (N, heads, tokens, head_dim)?). Choose another layer "
        "(target_layer=None picks one), or pass reshape_transform='nchw' to read it anyway"
    )


def _roughly_fits(grid: tuple[int, int], size: tuple[int, int], strict: bool) -> bool:
    """The two strides within a factor of two (valid convolutions, which shrink each side
    by a few pixels, on any input); with ``strict``, not larger than the input either."""
    (h, w), (height, width) = grid, size
    if strict and (h > height or w > width):
        return False
    ratio = (height / h) / (width / w)
    return 0.5 <= ratio <= 2.0


def _ambiguous_message(layer_name: str, shape: tuple[int, ...],
                       readings: Sequence[Reading]) -> str:
    options = "; ".join(f"{_spec_for(r)!r} reads it as {r.describe()}" for r in readings)
    return (
        f"layer {layer_name!r} outputs shape {shape}, which reads more than one way: "
        f"{options}. Choose with reshape_transform= one of those values"
    )


def _spec_for(reading: Reading) -> str:
    if reading.layout == "tokens":
        return f"tokens:{reading.prefix}"
    return reading.layout


def _is_attention_probabilities(output: Tensor) -> bool:
    if output.shape[-1] != output.shape[-2] or output.shape[-1] < 2:
        return False
    values = output.detach().float()
    if bool((values < 0).any()):
        return False
    return bool(torch.allclose(values.sum(-1), torch.ones((), device=values.device), atol=1e-3))


_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)


def _layout_hint(module: nn.Module, shape: tuple[int, ...], *,
                 last_dim_norm: bool = False) -> str | None:
    """``"nchw"`` or ``"nhwc"`` from the last of the layer's own modules (in registration
    order) that tells: what it normalises or projects, or a permutation it applies. With
    ``last_dim_norm`` a ``LayerNorm`` over the last dim says channels-last even when both
    dims have its size (a 1-D transformer's tokens ``(N, T, C)`` with ``T == C``)."""
    channels_first, channels_last = shape[1], shape[-1]
    first_order = [0, len(shape) - 1, *range(1, len(shape) - 1)]
    for part in reversed(list(module.modules())):
        dims = getattr(part, "dims", None)
        if (type(part).__name__ == "Permute" and isinstance(dims, (list, tuple))
                and len(dims) == len(shape)):
            return "nchw" if list(dims) == first_order else "nhwc"
        if isinstance(part, nn.modules.conv._ConvNd):
            return "nchw" if part.out_channels == channels_first else None
        if isinstance(part, _CHANNELS_FIRST):
            return "nchw"
        if isinstance(part, nn.LayerNorm) and len(part.normalized_shape) == 1:
            size = part.normalized_shape[0]
            if size == channels_last and (last_dim_norm or size != channels_first):
                return "nhwc"
            if size == channels_first != channels_last:
                return "nchw"
        if isinstance(part, nn.Linear) and part.out_features == channels_last:
            return "nhwc"
    return None


def vit_reshape_transform(
    num_prefix_tokens: int = 1, grid: tuple[int, int] | None = None
) -> ReshapeTransform:
    """Make a ``reshape_transform`` for vision-transformer token outputs.

    Usually not needed: ``reshape_transform="auto"`` (the default) or ``"tokens"`` infer
    the prefix count and the grid. The returned function maps tokens
    ``(N, num_prefix_tokens + h*w, C)`` to a spatial map ``(N, C, h, w)``: it drops the
    prefix tokens (class token, register tokens) and lays the patch tokens out row by row.

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
