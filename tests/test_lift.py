"""Lift, area share, border lift, the tolerant pointing game, location consistency:
each against its formula on maps and masks whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from gradcam_callback.metrics import (
    area_share,
    attention_scalars,
    border_energy,
    border_lift,
    border_mask,
    energy_in_mask,
    lift,
    location_consistency,
    pointing_game,
    top_cells,
)


def square_mask(size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_a_uniform_map_has_lift_one_in_every_region_whatever_its_size():
    uniform = torch.ones(1, 56, 56)
    for mask in (square_mask(56, 2, 2, 5), square_mask(56, 10, 10, 30), border_mask(56, 56)):
        assert lift(uniform, mask).item() == pytest.approx(1.0)
    assert border_lift(uniform).item() == pytest.approx(1.0)


def test_lift_is_energy_over_area_share():
    # the case: a 0.8% watermark holding 2.5% of the mass has lift ~3.1,
    # while a 22% digit holding 30% has lift ~1.4: raw energy ranks them the other way
    size = 100
    watermark = square_mask(size, 0, 0, 9)  # 81 px = 0.81%
    digit = square_mask(size, 30, 30, 47)  # 2209 px = 22.09%
    cams = torch.zeros(1, size, size)
    cams[0][watermark] = 0.025 / 81
    cams[0][digit] = 0.30 / 2209
    cams[0][~(watermark | digit)] = 0.675 / (size * size - 81 - 2209)
    assert energy_in_mask(cams, watermark).item() == pytest.approx(0.025, rel=1e-4)
    assert area_share(cams, watermark).item() == pytest.approx(0.0081)
    assert lift(cams, watermark).item() == pytest.approx(0.025 / 0.0081, rel=1e-4)
    assert lift(cams, digit).item() == pytest.approx(0.30 / 0.2209, rel=1e-4)
    assert lift(cams, watermark).item() > 2 > lift(cams, digit).item()


def test_lift_of_all_mass_in_the_mask_is_the_inverse_area_and_zero_outside():
    cams = torch.zeros(2, 10, 10)
    cams[0, 0, 0] = 1.0
    cams[1, 9, 9] = 1.0
    mask = square_mask(10, 0, 0, 2)  # 4% of the image
    assert lift(cams, mask).tolist() == pytest.approx([25.0, 0.0])


def test_lift_is_zero_not_nan_for_empty_masks_and_zero_maps():
    cams = torch.rand(2, 8, 8)
    cams[1] = 0
    values = lift(cams, torch.zeros(8, 8, dtype=torch.bool))
    assert values.tolist() == [0.0, 0.0]
    assert lift(cams, square_mask(8, 0, 0, 2))[1].item() == 0.0


def test_area_share_per_sample_masks_and_resizing():
    masks = torch.stack([square_mask(8, 0, 0, 4), square_mask(8, 0, 0, 2)])
    assert area_share(torch.zeros(2, 8, 8), masks).tolist() == [0.25, 0.0625]
    # a 16x16 map: the 8x8 mask is resized with nearest neighbours, same share
    assert area_share(torch.zeros(2, 16, 16), masks).tolist() == [0.25, 0.0625]


def test_border_lift_is_border_energy_over_the_frame_area():
    cams = torch.rand(3, 20, 20)
    frame = border_mask(20, 20).float().mean().item()  # 2 px of 20 on each side: 0.36
    assert frame == pytest.approx(0.36)
    torch.testing.assert_close(border_lift(cams), border_energy(cams) / frame)


def test_pointing_game_tolerance_counts_a_peak_one_cell_away():
    # a tight 2x2 mask in the corner; the map peaks two pixels inward (one 2-px cell)
    mask = square_mask(12, 0, 0, 2)
    cams = torch.zeros(1, 12, 12)
    cams[0, 3, 3] = 1.0
    assert pointing_game(cams, mask).tolist() == [False]
    assert pointing_game(cams, mask, tolerance=1).tolist() == [False]  # (3,3) is 2 px away
    assert pointing_game(cams, mask, tolerance=2).tolist() == [True]
    cams[0, 3, 3], cams[0, 6, 6] = 0.0, 1.0
    assert pointing_game(cams, mask, tolerance=2).tolist() == [False]  # 5 px away
    assert pointing_game(torch.zeros(1, 12, 12), mask, tolerance=3).tolist() == [False]
    with pytest.raises(ValueError, match="tolerance=-1"):
        pointing_game(cams, mask, tolerance=-1)


def test_pointing_game_tolerance_is_the_square_around_the_peak_on_non_square_maps():
    """Against the definition, cell by cell: a hit when any mask pixel lies within
    ``tolerance`` rows *and* columns of the peak (peaks at edges and corners included)."""
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(40, 7, 11, generator=g)
    masks = torch.rand(40, 7, 11, generator=g) > 0.93
    for tolerance in (0, 1, 2, 4):
        expected = []
        for cam, mask in zip(cams, masks, strict=True):
            y, x = divmod(int(cam.flatten().argmax()), cam.shape[1])
            window = mask[max(0, y - tolerance) : y + tolerance + 1,
                          max(0, x - tolerance) : x + tolerance + 1]
            expected.append(bool(window.any()))
        assert pointing_game(cams, masks, tolerance).tolist() == expected
        assert 0 < sum(expected) < len(expected)  # both outcomes occur


def test_attention_scalars_names_and_values():
    cams = torch.zeros(2, 10, 10)
    cams[:, 0, 0] = 1.0
    mask = square_mask(10, 0, 0, 5)
    scalars = attention_scalars(cams, {"corner_mask": mask}, tolerance=1)
    assert sorted(scalars) == ["area/corner_mask", "border_energy", "border_lift",
                               "energy_in_mask/corner_mask", "lift/corner_mask",
                               "pointing_game/corner_mask"]
    assert scalars["area/corner_mask"].tolist() == [0.25, 0.25]
    assert scalars["lift/corner_mask"].tolist() == [4.0, 4.0]
    assert scalars["border_lift"].tolist() == pytest.approx([1 / 0.36] * 2)


def test_location_consistency_is_the_shared_share_of_top_cells_within_groups():
    same_place = torch.zeros(4, 6, 6)
    same_place[:, 0, 0] = 1.0
    same_place[2:, 0, 0] = 3.0  # scale does not matter
    assert location_consistency(same_place).tolist() == pytest.approx([1.0] * 4)
    disjoint = torch.zeros(4, 6, 6)
    for i in range(4):
        disjoint[i, i, i] = 1.0
    assert location_consistency(disjoint).tolist() == pytest.approx([0.0] * 4)
    # two groups: within a group the maps agree, across groups they do not
    mixed = torch.zeros(4, 6, 6)
    mixed[:2, 0, 0] = 1.0
    mixed[2:, 5, 5] = 1.0
    groups = torch.tensor([0, 0, 1, 1])
    assert location_consistency(mixed, groups).tolist() == pytest.approx([1.0] * 4)
    assert location_consistency(mixed).tolist() == pytest.approx([1 / 3] * 4)  # 1 of 3 agree


def test_top_cells_are_the_share_with_the_largest_values_ties_kept_zeros_left_out():
    ramp = torch.arange(100.0).view(1, 10, 10)  # one cell per value 0..99
    assert top_cells(ramp).flatten().nonzero().flatten().tolist() == list(range(90, 100))
    assert top_cells(ramp, share=0.25).sum().item() == 25
    plateau = torch.zeros(1, 10, 10)
    plateau[0, :3, :5] = 1.0  # 15 tied cells at the top: all of them, not 10 picked by place
    plateau[0, 9, 9] = 1.0 - 1e-7  # tied up to rounding
    assert top_cells(plateau).sum().item() == 16
    scaled = plateau * 100.0
    scaled[0, 9, 9] = 100.0 - 5e-4  # tied relative to the peak (1e-5 of 100), not absolutely
    assert top_cells(scaled).sum().item() == 16
    assert top_cells(ramp, share=0.126).sum().item() == 13  # k = round(12.6), not 12
    sparse = torch.zeros(1, 10, 10)
    sparse[0, 4, 4], sparse[0, 7, 2] = 1.0, 0.5  # 2 positive cells < k = 10
    assert top_cells(sparse).flatten().nonzero().flatten().tolist() == [44, 72]
    assert not top_cells(torch.full((1, 4, 4), 0.3)).any()  # constant: no top
    broken = ramp.clone()
    broken[0, 0, 0] = float("nan")
    assert not top_cells(broken).any() and not top_cells(ramp.clone().fill_(float("inf"))).any()
    with pytest.raises(ValueError, match="share=0"):
        top_cells(ramp, share=0)


def test_maps_with_peaks_at_independent_places_score_the_share_itself():
    """Chance is readable without a reference run: noise maps score about ``share``."""
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(200, 16, 16, generator=g)
    for share in (0.1, 0.25):
        value = location_consistency(noise, share=share).mean().item()
        k = round(share * 256)
        assert value == pytest.approx(k / 256, abs=0.0015)


def test_diffuse_maps_at_different_places_are_not_consistent_though_their_cosine_is_high():
    g = torch.Generator().manual_seed(0)
    base = 0.6 + 0.1 * torch.rand(6, 16, 16, generator=g)  # diffuse, non-negative
    for i in range(6):
        base[i, (i % 3) * 5 : (i % 3) * 5 + 5, (i // 3) * 8 : (i // 3) * 8 + 5] += 0.5
    cosine = torch.nn.functional.cosine_similarity(base[0].flatten(), base[1].flatten(), 0)
    assert cosine > 0.9
    # 26 top cells each: 25 in the map's own blob, 1 in the shared background
    assert location_consistency(base).mean().item() < 0.05


def test_location_consistency_known_partial_overlap_and_lonely_maps():
    a = torch.zeros(1, 10, 10)
    a[0, 0, :] = 1.0  # top cells: row 0 (10 cells = 10% of 100)
    b = torch.zeros(1, 10, 10)
    b[0, :2, :] = 1.0  # 20 tied cells, all top: rows 0-1 (holds all of a's)
    c = torch.zeros(1, 10, 10)
    c[0, 9, :] = 1.0  # shares none with a or b
    values = location_consistency(torch.cat([a, b, c, torch.zeros(1, 10, 10), a]),
                                  torch.tensor([0, 0, 0, 0, 1]))
    # each map's own top cells are the denominator: a finds all 10 of its cells in b,
    # b finds 10 of its 20 in a; both find none in c, nor in the empty map, which has no
    # evidence anywhere, so shares nothing and scores 0
    assert values[:4].tolist() == pytest.approx([(1.0 + 0 + 0) / 3, (0.5 + 0 + 0) / 3, 0.0,
                                                 0.0])
    assert math.isnan(values[4].item())  # alone in its group: no partner to compare with
