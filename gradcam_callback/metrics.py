"""Numbers that move in TensorBoard's scalar charts: drift, energy and lift in a region,
pointing game, and how fixed the evidence's location is across images.

All functions take CAMs ``(N, H, W)`` with non-negative values (``compute_cam`` output) and
return one value per sample, as float32 (or bool) tensors ``(N,)`` on the maps' device.
None of them returns NaN: the degenerate cases (an all-zero map, an empty mask) have a
documented value. Two say "undefined" with NaN, for a mean to leave out: the
:func:`location_consistency` of a map alone in its group, and, in :func:`attention_scalars`,
the lift of an empty mask.

Formulas, per sample, with ``m`` a map flattened to a vector:

- ``attention_drift(p, c) = 1 - <p, c> / (|p| |c|)``: 0 when the maps point at the same
  place (whatever their scale), 1 when they are disjoint. Two all-zero maps have drift 0;
  one all-zero map against a non-zero one has drift 1.
- ``energy_in_mask(m, R) = sum(m * R) / sum(m)``: the share of the map's mass inside the
  region ``R`` (the energy-based pointing game). 0 for an all-zero map or an empty region.
  Compare it with the region's area share ``mean(R)``: a map that ignores the region
  scores about its area.
- ``area_share(R) = mean(R)``: the region's share of the image.
- ``lift(m, R) = energy_in_mask(m, R) / area_share(R)``: how much more of the map's mass
  the region holds than its size alone would give it. 1.0 = no preference (a uniform map
  has lift 1 in every region), above 1 = the model looks there, below 1 = it looks
  elsewhere. Unlike raw energy it can be compared between a 0.8% watermark and a 22%
  object. 0 for an empty region or an all-zero map.
- ``pointing_game(m, R, tolerance) = dilate(R, tolerance)[argmax m]``: whether the map's
  peak lies in the region grown by ``tolerance`` pixels on each side (the first peak when
  there are ties; False for an all-zero map). The callback passes one CAM cell: a map
  upsampled from a coarse layer peaks at a cell centre, which can sit up to a cell away
  from a tight mask that the cell covers.
- ``border_energy(m, width) = energy_in_mask(m, frame)``, with ``frame`` the outer
  ``width`` fraction of the image on each side; ``border_lift`` divides it by the frame's
  area (the 10% frame is 36% of a square image, so a uniform map has border energy 0.36
  and border lift 1.0).
- ``location_consistency(maps, groups, share)``: each map's *top cells* are its
  ``share`` (default 10%) of cells with the largest values (positive ones only; ties at the
  cut are kept). For each map, the share of its top cells that another map of its group
  also has among its top cells, averaged over the other maps of the group (the callback
  groups by the predicted class). 1 when every image of a class is decided at the same
  cells (a corner patch, a watermark at a class-specific spot); 0 when the places never
  overlap. When the evidence sits at independent places (objects anywhere in the image)
  it is the share of the image the other maps' top cells cover: about ``share`` (0.1)
  for maps with one clear peak region, less for maps with fewer positive cells than that,
  more for maps with wide plateaus. So the number reads without a reference run.
  Only the peaks count: a diffuse background that every map has in common
  adds nothing (a correlation of whole maps is pulled up by it). It needs no mask, but it
  cannot tell a shortcut from an object that always sits at the same place (centred
  objects), and a cue spread over the whole image (a tint, a texture) has no place to be
  consistent about. A map without evidence (all zero) has no place either: it shares
  nothing and scores 0, so a model whose maps are still empty reads 0, not undefined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradcam_callback.ops import resize_maps

__all__ = [
    "area_share",
    "attention_drift",
    "attention_scalars",
    "border_energy",
    "border_frame",
    "border_lift",
    "border_mask",
    "energy_in_mask",
    "lift",
    "location_consistency",
    "pointing_game",
    "top_cells",
]

TOP_SHARE = 0.1
"""The share of a map's cells that :func:`location_consistency` compares (its peaks)."""
TIE = 1e-5
"""Values this close (relative to the map's maximum) count as tied in :func:`top_cells`."""


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
    previous = resize_maps(previous.float(), current.shape[1:])
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


def area_share(cams: Tensor, masks: Tensor) -> Tensor:
    """Per-sample share of the image that ``masks`` covers, measured at the maps' size.

    Example::

        >>> area_share(torch.zeros(1, 2, 2), torch.tensor([[True, False], [False, False]]))
        tensor([0.2500])
    """
    _check_maps(cams, "cams")
    return _region(masks, cams).flatten(1).float().mean(1)


def lift(cams: Tensor, masks: Tensor) -> Tensor:
    """Per-sample ``energy_in_mask / area_share``: 1.0 = no preference for the region.

    0 for an empty region or an all-zero map.

    Example::

        >>> cams = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
        >>> lift(cams, torch.tensor([[False, True], [False, False]])).item()  # 0.75 / 0.25
        3.0
        >>> lift(torch.ones(1, 2, 2), torch.tensor([[False, True], [False, False]])).item()
        1.0
    """
    energy = energy_in_mask(cams, masks)
    area = area_share(cams, masks)
    return torch.where(area > 0, energy / torch.where(area > 0, area, 1.0), 0.0)


def pointing_game(cams: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Per-sample bool: does the map's maximum lie inside the mask (grown by
    ``tolerance`` pixels on each side, a square neighbourhood)?

    Example::

        >>> cams = torch.tensor([[[0.2, 0.9], [0.1, 0.0]]])
        >>> pointing_game(cams, torch.tensor([[False, True], [False, False]])).tolist()
        [True]
        >>> pointing_game(cams, torch.tensor([[False, False], [False, True]])).tolist()
        [False]
        >>> pointing_game(cams, torch.tensor([[False, False], [False, True]]), 1).tolist()
        [True]
    """
    _check_maps(cams, "cams")
    tolerance = int(tolerance)
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance}: must be an int >= 0 (pixels)")
    region = _region(masks, cams)
    flat = cams.flatten(1)
    peak = flat.argmax(dim=1)
    if tolerance:
        # only the peak's (2t+1)^d neighbourhood is looked at: a band around it along each
        # axis, crossed (no dilation of the whole mask)
        sizes = cams.shape[1:]
        coordinates = torch.unravel_index(peak, tuple(sizes))
        near = torch.ones_like(region)
        for axis, (size, at) in enumerate(zip(sizes, coordinates, strict=True)):
            band = (torch.arange(size, device=cams.device) - at.unsqueeze(1)).abs() <= tolerance
            shape = [len(cams)] + [1] * len(sizes)
            shape[axis + 1] = size
            near = near & band.view(shape)
        hit = (region & near).flatten(1).any(dim=1)
    else:
        hit = region.flatten(1).gather(1, peak.unsqueeze(1)).squeeze(1)
    return hit & (flat.amax(dim=1) > 0)


def border_mask(height: int, width: int, fraction: float = 0.1,
                device: torch.device | str = "cpu") -> Tensor:
    """Bool ``(height, width)``: True in the outer ``fraction`` of each side (at least 1 px)."""
    return border_frame((height, width), fraction, device)


def border_frame(size: tuple[int, ...] | torch.Size, fraction: float = 0.1,
                 device: torch.device | str = "cpu") -> Tensor:
    """Bool of ``size`` (``(h, w)``; ``(t,)`` for a signal, ``(d, h, w)`` for a volume):
    True in the outer ``fraction`` along each axis (at least 1 px at each end). A
    volume's axis shorter than :data:`MIN_BORDER_AXIS` (a few slices) has no border of
    its own: its slices belong to the frame only through the other axes.

    Example::

        >>> border_frame((10,)).int().tolist()
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        >>> border_frame((3, 10, 10))[1].int().sum().item()  # 3 slices: no depth border
        36
    """
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5), got {fraction!r}")
    sides = tuple(int(side) for side in size)
    frame = torch.ones(*sides, dtype=torch.bool, device=device)
    inner = []
    for side in sides:
        edge = max(1, round(side * fraction))
        thin = len(sides) == 3 and side < MIN_BORDER_AXIS
        inner.append(slice(None) if thin else slice(edge, side - edge))
    frame[tuple(inner)] = False
    return frame


MIN_BORDER_AXIS = 8
"""A volume's axes shorter than this have no border of their own (:func:`border_frame`)."""


def border_energy(cams: Tensor, fraction: float = 0.1) -> Tensor:
    """Per-sample share of CAM mass in the outer ``fraction`` frame of the image."""
    _check_maps(cams, "cams")
    return energy_in_mask(cams, border_frame(cams.shape[1:], fraction, cams.device))


def border_lift(cams: Tensor, fraction: float = 0.1) -> Tensor:
    """Per-sample :func:`border_energy` divided by the frame's area share (1.0 = uniform)."""
    _check_maps(cams, "cams")
    return lift(cams, border_frame(cams.shape[1:], fraction, cams.device))


def location_consistency(maps: Tensor, groups: Tensor | None = None,
                         share: float = TOP_SHARE) -> Tensor:
    """Per-sample mean share of its top cells that the other maps of its group share.

    Args:
        maps: ``(N, h, w)`` non-negative maps.
        groups: ``(N,)`` integer group of each map (e.g. the predicted class); ``None``
            puts all maps in one group.
        share: which share of the cells are a map's top cells (see :func:`top_cells`).

    Returns:
        float32 ``(N,)`` in ``[0, 1]``: for map ``i`` with top cells ``A_i``, the mean of
        ``|A_i & A_j| / |A_i|`` over the other maps ``j`` of its group. About ``share``
        when the maps' peaks are at independent places (exactly: the mean share of the
        cells that the other maps' top cells cover). A map without top cells (constant,
        e.g. all zero: no evidence anywhere) shares nothing: it scores 0 and adds nothing
        to its partners' scores. NaN for a map alone in its group (no partner to compare
        with): leave those out of a mean (``nanmean``).

    Example::

        >>> corner = torch.zeros(3, 4, 4); corner[:, 0, 0] = 1.0
        >>> location_consistency(corner).tolist()
        [1.0, 1.0, 1.0]
        >>> moving = torch.eye(4).view(4, 2, 2)  # one-hot maps at four places
        >>> location_consistency(moving).tolist()
        [0.0, 0.0, 0.0, 0.0]
    """
    _check_maps(maps, "maps")
    top = top_cells(maps, share).float()
    sizes = top.sum(1)
    if groups is None:
        groups = torch.zeros(len(maps), dtype=torch.long, device=maps.device)
    groups = groups.to(maps.device).long()
    same = groups.unsqueeze(0) == groups.unsqueeze(1)
    same.fill_diagonal_(False)
    partners = same.sum(1)
    shared = (top @ top.T) / sizes.clamp(min=1).unsqueeze(1)  # rows of zeros: no top cells
    values = (shared * same).sum(1) / partners.clamp(min=1)
    return torch.where(partners > 0, values, float("nan"))


def top_cells(maps: Tensor, share: float = TOP_SHARE) -> Tensor:
    """Bool ``(N, h*w)``: each map's top ``share`` of cells.

    The ``k = max(1, round(share * h * w))`` largest values, and any cell tied with the
    ``k``-th (equal within ``1e-5`` of the map's maximum, so no tie is broken by position
    or by rounding); only positive cells count, so a map with
    fewer than ``k`` positive cells has only those. All False for a constant map and for
    a map with a NaN or infinite value (``compute_cam`` never gives one).

    Example::

        >>> top_cells(torch.tensor([[[0.0, 0.2], [0.9, 0.5]]]), share=0.5).tolist()
        [[False, False, True, True]]
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share={share!r}: must be in (0, 1] (a share of the cells)")
    flat = maps.flatten(1).float()
    k = max(1, round(share * flat.shape[1]))
    finite = torch.isfinite(flat).all(1, keepdim=True)
    flat = torch.where(finite, flat, 0.0)
    peak = flat.amax(1, keepdim=True)
    # "tied" = within TIE of the peak's scale: a plateau (a bilinear upsampling's corners)
    # stays whole whatever rounding the batch size brought into the map
    kth = flat.topk(k, dim=1).values[:, -1:] - TIE * peak.abs()
    constant = peak == flat.amin(1, keepdim=True)
    return (flat >= kth) & (flat > 0) & ~constant & finite


def attention_scalars(cams: Tensor, masks: dict[str, Tensor] | None = None,
                      tolerance: int = 0) -> dict[str, Tensor]:
    """The per-sample values the callback logs (as means), by their tag suffix.

    ``border_energy`` and ``border_lift``, and for each named mask ``area/<name>``,
    ``energy_in_mask/<name>``, ``lift/<name>`` and ``pointing_game/<name>`` (1.0 for a
    hit, 0.0 for a miss; the peak may be ``tolerance`` pixels outside the mask). A sample
    whose mask is empty has no lift (a share of nothing): NaN there, so a mean over the
    samples leaves it out; its energy, area and pointing game are 0.

    Example::

        >>> cams = torch.zeros(1, 10, 10); cams[0, 0, 0] = 1.0
        >>> {k: round(v.item(), 3) for k, v in attention_scalars(cams).items()}
        {'border_energy': 1.0, 'border_lift': 2.778}
    """
    scalars = {"border_energy": border_energy(cams), "border_lift": border_lift(cams)}
    for name, mask in (masks or {}).items():
        area = area_share(cams, mask)
        scalars[f"area/{name}"] = area
        scalars[f"energy_in_mask/{name}"] = energy_in_mask(cams, mask)
        scalars[f"lift/{name}"] = torch.where(area > 0, lift(cams, mask), float("nan"))
        scalars[f"pointing_game/{name}"] = pointing_game(cams, mask, tolerance).float()
    return scalars


def _region(masks: Tensor, cams: Tensor) -> Tensor:
    """``masks`` as bool ``(N, *S)`` at the maps' size (nearest)."""
    one_for_all = masks.dim() == cams.dim() - 1 and (
        cams.dim() == 3 or tuple(masks.shape) == tuple(cams.shape[1:]))
    if one_for_all:  # (an image mask of any size; a signal's or volume's of the maps' size)
        masks = masks.unsqueeze(0).expand(cams.shape[0], *masks.shape)
    if masks.dim() != cams.dim() or masks.shape[0] != cams.shape[0]:
        want = {2: "(N, T)", 3: "(N, H, W)", 4: "(N, D, H, W)"}[cams.dim()]
        raise ValueError(
            f"masks must be {want} with N = {cams.shape[0]} (or one {want[4:-1] or 'mask'} "
            f"for all), the maps' rank, got {tuple(masks.shape)}"
        )
    region = masks.to(device=cams.device, dtype=torch.float32)
    if region.shape[1:] != cams.shape[1:]:
        region = F.interpolate(region.unsqueeze(1), size=cams.shape[1:], mode="nearest")
        region = region.squeeze(1)
    return region > 0.5


def _check_maps(maps: Tensor, name: str) -> None:
    if not isinstance(maps, Tensor) or maps.dim() not in (2, 3, 4):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"{name} must be maps (N, H, W) (or (N, T), (N, D, H, W)), got "
                         f"{shape}")
