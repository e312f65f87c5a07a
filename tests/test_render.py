"""Overlays: tensors in, uint8 out, any matplotlib colormap."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from gradcam_callback import colormap_lut, overlay


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
        (lambda: colormap_lut("virdis"), "unknown colormap 'virdis'.*'viridis'"),
        (lambda: overlay(torch.rand(1, 3, 4, 4), torch.rand(1, 5, 5)),
         r"cams must be \(N, H, W\) = \(1, 4, 4\).*got \(1, 5, 5\)"),
        (lambda: overlay(torch.rand(1, 2, 4, 4), torch.rand(1, 4, 4)), r"\(N, 1 or 3, H, W\)"),
        (lambda: overlay(torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4), alpha=1.5),
         r"alpha must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_render_arguments_get_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
