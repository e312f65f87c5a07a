"""Colour maps as lookup tables: a gather from a 256-entry table, no Python per pixel.

The tables come from matplotlib (imported on first use, once per colormap).
"""

from __future__ import annotations

import difflib
import functools

import torch
from torch import Tensor

__all__ = ["colormap_lut", "heatmap"]


@functools.lru_cache(maxsize=16)
def _lut_cpu(name: str) -> Tensor:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=3)
        raise ValueError(
            f"colormap={name!r}: not a matplotlib colormap name"
            + (f"; closest: {', '.join(map(repr, close))}" if close else "")
        ) from None
    table = cmap(torch.linspace(0, 1, 256).numpy())[:, :3]
    return torch.as_tensor(table, dtype=torch.float32)


def colormap_lut(name: str = "jet", device: torch.device | str = "cpu") -> Tensor:
    """A ``(256, 3)`` float32 RGB table in ``[0, 1]`` for the matplotlib colormap ``name``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not a matplotlib colormap (the message lists close names).
    """
    if not isinstance(name, str):
        raise TypeError(f"colormap={name!r}: must be a matplotlib colormap name (str), got "
                        f"{type(name).__name__}")
    return _lut_cpu(name).to(device)


def heatmap(cams: Tensor, *, colormap: str = "jet") -> Tensor:
    """Colour ``(N, H, W)`` maps in ``[0, 1]``: float RGB ``(N, 3, H, W)`` in ``[0, 1]``."""
    lut = colormap_lut(colormap, cams.device)
    index = (cams.detach().float().clamp(0, 1) * 255).round().long()
    return lut[index].permute(0, 3, 1, 2)


