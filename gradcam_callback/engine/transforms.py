"""Read a layer's output as spatial maps ``(N, C, h, w)``.

A ``reshape_transform`` maps a layer output that is not channels-first (a vision
transformer's token sequence, say) to ``(N, C, h, w)``; it is applied to the activations
and the gradients alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

ReshapeTransform = Callable[[Tensor], Tensor]

__all__ = ["ReshapeTransform", "vit_reshape_transform"]


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
