"""Overlays: tensors in, uint8 out, any matplotlib colormap."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from gradcam_callback import annotated_grid, colormap_lut, overlay, to_display


def test_overlay_blends_the_colormap_over_the_image():
    images = torch.full((2, 3, 4, 5), 0.5)
    cams = torch.zeros(2, 4, 5)
    cams[:, 0, 0] = 1.0
    out = overlay(images, cams, colormap="viridis", alpha=0.5)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 4, 5)
    top = torch.tensor(matplotlib.colormaps["viridis"](1.0)[:3], dtype=torch.float32)
    bottom = torch.tensor(matplotlib.colormaps["viridis"](0.0)[:3], dtype=torch.float32)
    assert torch.equal(out[0, :, 0, 0], ((0.25 + 0.5 * top) * 255).round().to(torch.uint8))
    assert torch.equal(out[1, :, 3, 4], ((0.25 + 0.5 * bottom) * 255).round().to(torch.uint8))


def test_alpha_zero_shows_the_image_and_grayscale_becomes_rgb():
    gray = torch.rand(1, 1, 6, 6)
    out = overlay(gray, torch.rand(1, 6, 6), alpha=0.0)
    expected = (gray.expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
    assert torch.equal(out, expected)


def test_lut_is_a_256_entry_rgb_table():
    lut = colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.min() >= 0 and lut.max() <= 1
    assert not torch.equal(lut[0], lut[255])


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: colormap_lut("virdis"), "colormap='virdis': not a matplotlib.*'viridis'"),
        (lambda: overlay(torch.rand(1, 3, 4, 4), torch.rand(1, 5, 5)),
         r"cams must be \(N, H, W\) = \(1, 4, 4\).*got \(1, 5, 5\)"),
        (lambda: overlay(torch.rand(1, 2, 4, 4), torch.rand(1, 4, 4)), r"\(N, 1 or 3, H, W\)"),
        (lambda: overlay(torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4), alpha=1.5),
         r"^alpha=1.5: must be a finite number >= 0.0 and <= 1.0"),
    ],
)
def test_bad_render_arguments_get_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_grid_captions_each_column_and_frames_wrong_ones_in_red():
    tiles = torch.full((2, 3, 40, 40), 128, dtype=torch.uint8)
    grid = annotated_grid([tiles, tiles], ["input", "Grad-CAM"], [["true: a", "pred: b"],
                          ["true: a", "pred: a"]], wrong=[True, False])
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    red = (grid[0] > 200) & (grid[1] < 80) & (grid[2] < 80)
    second_column = grid.shape[2] - (40 + 2 * 6)  # a tile and its two gaps
    assert red[:, :second_column].sum() > 100  # the wrong column is framed
    assert red[:, second_column:].sum() == 0  # the right one is not
    caption_band = grid[:, :20, 60:]
    assert (caption_band > 200).any()  # text was drawn above the tiles


def test_to_display_undoes_normalisation_or_min_max_scales():
    raw = torch.rand(2, 3, 4, 4)
    normalised = (raw - 0.5) / 0.2
    torch.testing.assert_close(to_display(normalised, [0.5] * 3, [0.2] * 3), raw)
    scaled = to_display(normalised)
    assert scaled.amin() == 0 and scaled.amax() == 1
    with pytest.raises(ValueError, match=r"mean=\[0.5, 0.5\], std=\[0.2, 0.2\]: the inputs "
                       r"have 3 channels; give 3 values each"):
        to_display(normalised, [0.5, 0.5], [0.2, 0.2])


def test_heatmap_rounds_to_the_nearest_colour_table_entry():
    from gradcam_callback import heatmap

    values = torch.tensor([0.0, 0.3, 0.5, 0.7719, 0.999, 1.0])
    colours = heatmap(values.view(1, 1, -1), colormap="viridis")[0]  # (3, 1, 6)
    lut = colormap_lut("viridis")
    expected = lut[(values * 255).round().long()].T.unsqueeze(1)  # 0, 77, 128, 197, 255, 255
    assert torch.equal(colours, expected)
    assert not torch.equal(lut[254], lut[255])  # so truncating 0.999 would show


def test_to_display_scales_each_image_on_its_own_unless_joint():
    dim = torch.full((1, 3, 2, 2), 0.2)
    dim[0, :, 0, 0] = 0.4
    bright = torch.full((1, 3, 2, 2), 0.6)
    bright[0, :, 1, 1] = 1.0
    images = torch.cat([dim, bright])
    separate = to_display(images)
    for i in range(2):
        assert separate[i].min() == 0 and separate[i].max() == 1
    joint = to_display(images, joint=True)
    torch.testing.assert_close(joint, (images - 0.2) / 0.8)
    assert joint[0].max() == pytest.approx(0.25)  # the dim image stays dim
