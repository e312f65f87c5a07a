"""`gradcam-callback explain` with nothing but a model and images: layer, reading, aspect
ratio, opacity, and load errors that keep their detail."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from gradcam_callback.cli import main
from gradcam_callback.cli.loading import _one_line

BANDS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def wide_image(tmp_path):
    """128 wide, 64 high: red, green, blue bands of 32, 64 and 32 columns."""
    pixels = np.zeros((64, 128, 3), dtype=np.uint8)
    pixels[:, :32] = BANDS["red"]
    pixels[:, 32:96] = BANDS["green"]
    pixels[:, 96:] = BANDS["blue"]
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["explain", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_timm_vit_runs_with_no_weights_no_layer_no_transform(tmp_path, wide_image, capsys):
    status, out, err = _run(
        capsys, "--model", "timm:create_model", "--model-arg", "model_name=vit_tiny_patch16_224",
        "--model-arg", "img_size=64", "--model-arg", "num_classes=3", "--image",
        str(wide_image), "--size", "64", "--out", str(tmp_path / "out"))
    assert status == 0, err
    assert "warning: no --weights for timm:create_model" in err
    assert "layer: blocks.11.norm1 (auto-detected): tokens, 1 prefix + 4x4 grid" in out
    heatmap = np.asarray(Image.open(tmp_path / "out" / "wide_heatmap.png"))
    assert heatmap.shape == (64, 64, 3) and heatmap.std() > 5  # a map, not a flat picture


@pytest.mark.parametrize(
    ("resize", "size", "columns"),
    [
        # crop: shorter side to 32 (so 64 wide), the centre 32 columns: green only
        ("crop", (32, 32), {"green": (1, 31)}),
        # squash: 128 -> 32 wide, all three bands, distorted
        ("squash", (32, 32), {"red": (0, 7), "green": (9, 23), "blue": (25, 32)}),
        ("none", (64, 128), {"red": (0, 31), "green": (33, 95), "blue": (97, 128)}),
    ],
)
def test_resize_modes_and_alpha_zero_show_the_image_as_fed(tmp_path, wide_image, capsys,
                                                           resize, size, columns):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "w.pth")
    status, _, err = _run(
        capsys, "--model", "torchvision.models:resnet18", "--model-arg", "num_classes=3",
        "--weights", str(tmp_path / "w.pth"), "--image", str(wide_image), "--size", "32",
        "--resize", resize, "--alpha", "0", "--out", str(tmp_path / resize))
    assert status == 0, err
    shown = np.asarray(Image.open(tmp_path / resize / "wide_overlay.png").convert("RGB"))
    assert shown.shape[:2] == size
    for colour, (start, stop) in columns.items():
        assert np.abs(shown[:, start:stop].astype(int) - BANDS[colour]).max() <= 8, colour
    heatmap = np.asarray(Image.open(tmp_path / resize / "wide_heatmap.png").convert("RGB"))
    assert np.abs(heatmap.astype(int) - shown).max() > 50  # alpha=0: no heatmap in the overlay


def test_alpha_blends_the_heatmap_into_the_overlay(tmp_path, wide_image, capsys):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "w.pth")
    common = ["--model", "torchvision.models:resnet18", "--model-arg", "num_classes=3",
              "--weights", str(tmp_path / "w.pth"), "--image", str(wide_image), "--size", "32",
              "--layer", "layer3"]
    for alpha in ("0", "1"):
        assert _run(capsys, *common, "--alpha", alpha, "--out", str(tmp_path / alpha))[0] == 0
    image = np.asarray(Image.open(tmp_path / "0" / "wide_overlay.png").convert("RGB")).astype(int)
    heat = np.asarray(Image.open(tmp_path / "1" / "wide_heatmap.png").convert("RGB")).astype(int)
    full = np.asarray(Image.open(tmp_path / "1" / "wide_overlay.png").convert("RGB")).astype(int)
    assert np.abs(full - heat).max() <= 1  # alpha=1: the heatmap alone
    assert np.abs(full - image).max() > 50


def test_bad_alpha_resize_and_reading_are_one_line_errors(tmp_path, wide_image, capsys):
    common = ["--model", "torchvision.models:resnet18", "--image", str(wide_image),
              "--out", str(tmp_path)]
    status, _, err = _run(capsys, *common, "--alpha", "1.5")
    assert status == 2 and err.strip() == "gradcam-callback: error: --alpha must be in [0, 1], " \
                                          "got 1.5"
    status, _, err = _run(capsys, *common, "--reshape-transform", "swin")
    assert status == 2 and "--reshape-transform='swin': valid readings are 'auto'" in err
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    status, _, err = _run(capsys, *common[:2], "--image", str(wide_image),
                          str(tmp_path / "small.png"), "--resize", "none")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "--resize none needs images of one size, got 64x128 (wide.png), 30x40 (small.png)" in err


def test_a_state_dict_that_does_not_fit_lists_what_is_wrong(tmp_path, wide_image, capsys):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    del state["layer1.0.bn1.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    status, _, err = _run(
        capsys, "--model", "torchvision.models:resnet18", "--model-arg", "num_classes=3",
        "--weights", str(tmp_path / "w.pth"), "--image", str(wide_image), "--out",
        str(tmp_path))
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "does not fit torchvision.models:resnet18: Error(s) in loading state_dict for " \
           "ResNet:" in lines[0]
    assert 'Unexpected key(s) in state_dict: "extra.weight".' in lines[0]
    assert 'Missing key(s) in state_dict: "layer1.0.bn1.running_mean".' in lines[0]
    assert "size mismatch for fc.weight: copying a param with shape torch.Size([10, 512]) " \
           "from checkpoint, the shape in current model is torch.Size([3, 512])." in lines[0]


def test_long_key_lists_are_shortened_on_the_one_line():
    keys = ", ".join(f'"k{i}"' for i in range(9))
    error = RuntimeError(f"Error(s) in loading state_dict for M:\n\tMissing key(s) in "
                         f"state_dict: {keys}. \n\tUnexpected key(s) in state_dict: \"x\". ")
    assert _one_line(error) == (
        'Error(s) in loading state_dict for M: Missing key(s) in state_dict: "k0", "k1", "k2", '
        '"k3", "k4", ... (4 more). Unexpected key(s) in state_dict: "x".')
