"""Numbers that move in TensorBoard's scalar charts: drift, energy in a region, pointing game.

All functions take CAMs ``(N, H, W)`` with non-negative values (``compute_cam`` output) and
return one value per sample, as float32 (or bool) tensors ``(N,)`` on the maps' device.
None of them returns NaN: the degenerate cases (an all-zero map, an empty mask) have a
documented value.

Formulas, per sample, with ``m`` a map flattened to a vector:

- ``attention_drift(p, c) = 1 - <p, c> / (|p| |c|)``: 0 when the maps point at the same
  place (whatever their scale), 1 when they are disjoint. Two all-zero maps have drift 0;
  one all-zero map against a non-zero one has drift 1.
- ``energy_in_mask(m, R) = sum(m * R) / sum(m)``: the share of the map's mass inside the
  region ``R`` (the energy-based pointing game). 0 for an all-zero map or an empty region.
  Compare it with the region's area share ``mean(R)``: a map that ignores the region
  scores about its area.
- ``pointing_game(m, R) = R[argmax m]``: whether the map's peak lies in the region
  (the first peak when there are ties; False for an all-zero map).
- ``border_energy(m, width) = energy_in_mask(m, frame)``, with ``frame`` the outer
  ``width`` fraction of the image on each side: a mask-free shortcut signal (borders,
  watermarks, corner patches all live there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam_callback.ops import resize_maps

__all__ = [
    "attention_drift",
    "attention_scalars",
    "border_energy",
    "border_mask",
    "energy_in_mask",
    "pointing_game",
]


def attention_drift(previous: Tensor, current: Tensor) -> Tensor:
    """Per-sample ``1 - cosine similarity`` of two batches of maps ``(N, H, W)``.

    Maps of different sizes are compared at ``current``'s size (bilinear resizing).

    Example::

        >>> a = torch.zeros(1, 4, 4); a[0, 0, 0] = 1
        >>> b = torch.zeros(1, 4, 4); b[0, 3, 3] = 1
        >>> attention_drift(a, a).item(), attention_drift(a, b).item()
        (0.0, 1.0)
    """
    _check_maps(previous, "previous")
    _check_maps(current, "current")
    if previous.shape[0] != current.shape[0]:
        raise ValueError(
            f"previous and current need the same number of maps, got {previous.shape[0]} "
            f"and {current.shape[0]}"
        )
    previous = resize_maps(previous.float(), current.shape[-2:])
    p, c = previous.flatten(1).float(), current.flatten(1).float()
    p_norm, c_norm = p.norm(dim=1), c.norm(dim=1)
    both = (p_norm > 0) & (c_norm > 0)
    cosine = (p * c).sum(1) / torch.where(both, p_norm * c_norm, 1.0)
    neither = (p_norm == 0) & (c_norm == 0)
    similarity = torch.where(both, cosine, torch.where(neither, 1.0, 0.0))
    return (1.0 - similarity).clamp(0.0, 1.0)


def energy_in_mask(cams: Tensor, masks: Tensor) -> Tensor:
    """Per-sample share of CAM mass inside ``masks`` (bool ``(N, h, w)`` or ``(h, w)``).

    Masks of another size than the maps are resized with nearest neighbours.

    Example::

        >>> cams = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
        >>> energy_in_mask(cams, torch.tensor([[True, False], [False, False]])).item()
        0.25
    """
    _check_maps(cams, "cams")
    region = _region(masks, cams)
    mass = cams.flatten(1).float()
    total = mass.sum(1)
    inside = (mass * region.flatten(1)).sum(1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)


def pointing_game(cams: Tensor, masks: Tensor) -> Tensor:
    """Per-sample bool: does the map's maximum lie inside the mask?

    Example::

        >>> cams = torch.tensor([[[0.2, 0.9], [0.1, 0.0]]])
        >>> pointing_game(cams, torch.tensor([[False, True], [False, False]])).tolist()
        [True]
    """
    _check_maps(cams, "cams")
    region = _region(masks, cams).flatten(1)
    flat = cams.flatten(1)
    peak = flat.argmax(dim=1, keepdim=True)
    hit = region.gather(1, peak).squeeze(1)
    return hit & (flat.amax(dim=1) > 0)


def border_mask(height: int, width: int, fraction: float = 0.1,
                device: torch.device | str = "cpu") -> Tensor:
    """Bool ``(height, width)``: True in the outer ``fraction`` of each side (at least 1 px)."""
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5), got {fraction!r}")
    rows, cols = max(1, round(height * fraction)), max(1, round(width * fraction))
    frame = torch.ones(height, width, dtype=torch.bool, device=device)
    frame[rows : height - rows, cols : width - cols] = False
    return frame


def border_energy(cams: Tensor, fraction: float = 0.1) -> Tensor:
    """Per-sample share of CAM mass in the outer ``fraction`` frame of the image."""
    _check_maps(cams, "cams")
    return energy_in_mask(cams, border_mask(*cams.shape[-2:], fraction, device=cams.device))


def attention_scalars(cams: Tensor, masks: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The per-sample values the callback logs (as means), by their tag suffix.

    ``border_energy``, and for each named mask ``energy_in_mask/<name>`` and
    ``pointing_game/<name>`` (1.0 for a hit, 0.0 for a miss).

    Example::

        >>> cams = torch.zeros(1, 10, 10); cams[0, 0, 0] = 1.0
        >>> {k: v.tolist() for k, v in attention_scalars(cams).items()}
        {'border_energy': [1.0]}
    """
    scalars = {"border_energy": border_energy(cams)}
    for name, mask in (masks or {}).items():
        scalars[f"energy_in_mask/{name}"] = energy_in_mask(cams, mask)
        scalars[f"pointing_game/{name}"] = pointing_game(cams, mask).float()
    return scalars


def _region(masks: Tensor, cams: Tensor) -> Tensor:
    """``masks`` as float ``(N, H, W)`` at the maps' size."""
    if masks.dim() == 2:
        masks = masks.unsqueeze(0).expand(cams.shape[0], -1, -1)
    if masks.dim() != 3 or masks.shape[0] != cams.shape[0]:
        raise ValueError(
            f"masks must be (N, H, W) with N = {cams.shape[0]} (or one (H, W) mask for all), "
            f"got {tuple(masks.shape)}"
        )
    region = masks.to(device=cams.device, dtype=torch.float32)
    if region.shape[-2:] != cams.shape[-2:]:
        region = F.interpolate(region.unsqueeze(1), size=cams.shape[-2:], mode="nearest")
        region = region.squeeze(1)
    return region > 0.5


def _check_maps(maps: Tensor, name: str) -> None:
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"{name} must be maps (N, H, W), got {shape}")
