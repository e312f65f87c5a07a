"""Metrics on hand-made maps with known answers."""

from __future__ import annotations

import pytest
import torch

from gradcam_callback.metrics import (
    attention_drift,
    border_energy,
    border_mask,
    energy_in_mask,
    pointing_game,
)


def spot(row: int, col: int, size: int = 4, value: float = 1.0) -> torch.Tensor:
    maps = torch.zeros(1, size, size)
    maps[0, row, col] = value
    return maps


def test_drift_is_zero_for_the_same_place_whatever_the_scale_and_one_for_disjoint_maps():
    a, b = spot(0, 0), spot(3, 3)
    assert attention_drift(a, a * 7).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_drift(a, b).item() == 1.0
    half = (a + b) / 2  # cosine with a = 1/sqrt(2)
    assert attention_drift(a, half).item() == pytest.approx(1 - 2**-0.5, abs=1e-6)


def test_drift_of_zero_maps_is_defined():
    zero = torch.zeros(1, 4, 4)
    assert attention_drift(zero, zero).item() == 0.0
    assert attention_drift(zero, spot(1, 1)).item() == 1.0


def test_drift_compares_maps_of_different_sizes_per_sample():
    previous = torch.ones(2, 2, 2)
    current = torch.ones(2, 8, 8)
    current[1] = 0
    current[1, 0, 0] = 1
    drift = attention_drift(previous, current)
    assert drift.shape == (2,)
    assert drift[0].item() == pytest.approx(0.0, abs=1e-6) and drift[1].item() > 0.8


def test_energy_in_mask_is_the_share_of_mass_inside():
    cams = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
    mask = torch.tensor([[True, True], [False, False]])
    assert energy_in_mask(cams, mask).item() == 0.5
    assert energy_in_mask(torch.zeros(1, 2, 2), mask).item() == 0.0
    assert energy_in_mask(cams, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0


def test_masks_of_another_size_are_resized_nearest():
    cams = torch.zeros(1, 8, 8)
    cams[0, :4, :4] = 1.0  # all mass in the top-left quarter
    small_mask = torch.tensor([[[True, False], [False, False]]])
    assert energy_in_mask(cams, small_mask).item() == 1.0
    assert pointing_game(cams, small_mask).tolist() == [True]


def test_pointing_game():
    cams = torch.stack([spot(0, 1)[0], spot(3, 0)[0], torch.zeros(4, 4)])
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, 0, :] = True  # the top row
    assert pointing_game(cams, mask).tolist() == [True, False, False]


def test_border_energy_uses_the_outer_ten_percent():
    frame = border_mask(20, 10)
    assert frame[0].all() and frame[-2:].all() and frame[:, 0].all() and frame[:, -1].all()
    assert not frame[2:-2, 1:-1].any()
    cams = torch.zeros(2, 20, 10)
    cams[0, 0, 5] = 1.0  # on the border
    cams[1, 10, 5] = 1.0  # in the middle
    assert border_energy(cams).tolist() == [1.0, 0.0]


def test_uniform_map_scores_its_area():
    cams = torch.ones(1, 10, 10)
    assert border_energy(cams).item() == pytest.approx(border_mask(10, 10).float().mean().item())


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: attention_drift(torch.zeros(2, 3, 3), torch.zeros(3, 3, 3)), "same number"),
        (lambda: energy_in_mask(torch.zeros(3), torch.zeros(3)), r"cams must be maps"),
        (lambda: energy_in_mask(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4)),
         r"masks must be \(N, D, H, W\) with N = 2 .* the maps' rank, got \(2, 4, 4\)"),
        (lambda: energy_in_mask(torch.zeros(2, 3, 3), torch.zeros(3, 3, 3)),
         r"masks must be \(N, H, W\) with N = 2"),
        (lambda: border_mask(10, 10, 0.6), r"fraction must be in \(0, 0.5\), got 0.6"),
    ],
)
def test_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize(("size", "fraction"), [(8, 0.05), (5, 0.01), (3, 0.1)])
def test_the_border_is_at_least_one_pixel_wide(size, fraction):
    frame = border_mask(size, size, fraction)
    expected = torch.ones(size, size, dtype=torch.bool)
    expected[1:-1, 1:-1] = False
    assert torch.equal(frame, expected)
    assert torch.equal(border_mask(20, 10, 0.1)[2:-2, 1:-1], torch.zeros(16, 8, dtype=torch.bool))
    assert border_mask(20, 10, 0.1).sum() == 20 * 10 - 16 * 8


def test_the_region_numbers_on_signals_and_volumes_are_their_formulas():
    from gradcam_callback.metrics import border_frame, border_lift, lift, pointing_game

    signal = torch.zeros(2, 20)
    signal[0, 5:7] = 1.0  # all mass in a 10% window
    window = torch.zeros(2, 20, dtype=torch.bool)
    window[:, 4:8] = True  # 20% of the signal
    assert lift(signal, window).tolist() == pytest.approx([5.0, 0.0])
    assert border_frame((20,)).int().tolist() == [1, 1] + [0] * 16 + [1, 1]
    assert border_lift(torch.ones(1, 20)).tolist() == pytest.approx([1.0])
    volume = torch.zeros(1, 10, 10, 10)
    volume[0, 0, 0, 0] = 1.0
    frame = border_frame((10, 10, 10))
    assert frame.float().mean().item() == pytest.approx(1 - 0.8**3)  # 1 px of 10 each end
    assert border_lift(volume).item() == pytest.approx(1 / (1 - 0.8**3))
    cube = torch.zeros(1, 10, 10, 10, dtype=torch.bool)
    cube[0, 2:4, 2:4, 2:4] = True
    assert not pointing_game(volume, cube).item()
    assert not pointing_game(volume, cube, tolerance=1).item()
    assert pointing_game(volume, cube, tolerance=2).item()  # (0,0,0) is 2 from (2,2,2)
