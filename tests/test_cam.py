"""compute_cam in the situations a training loop puts it in, and its input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_callback import CAM_METHODS, compute_cam, explain_batch


@pytest.mark.parametrize("method", CAM_METHODS)
def test_batch_of_one_equals_its_row_in_a_batch(tiny_cnn, images, method):
    batch = compute_cam(tiny_cnn, images, "features", [1, 2, 3], method=method)
    alone = compute_cam(tiny_cnn, images[1:2], "features", [2], method=method)
    assert alone.shape == (1, 32, 32)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_same_result_under_no_grad_and_inference_mode(tiny_cnn, images, method):
    plain = compute_cam(tiny_cnn, images, "features", method=method)
    with torch.no_grad():
        under_no_grad = compute_cam(tiny_cnn, images, "features", method=method)
    with torch.inference_mode():
        inference_images = images.clone()  # an inference tensor, as Lightning's validate() makes
        under_inference = compute_cam(tiny_cnn, inference_images, "features", method=method)
    assert torch.equal(plain, under_no_grad)
    assert torch.equal(plain, under_inference)
    assert not under_inference.is_inference()


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_targets_made_under_inference_mode_work(tiny_cnn, images, method):
    expected = compute_cam(tiny_cnn, images, "features", [1, 2, 3], method=method)
    with torch.inference_mode():  # what a validation loop hands over: inference tensors
        inputs, labels = images.clone(), torch.tensor([1, 2, 3])
        maps = compute_cam(tiny_cnn, inputs, "features", labels, method=method)
    assert torch.equal(maps, expected)


def test_frozen_backbone_still_gets_maps(tiny_cnn, images):
    unfrozen = compute_cam(tiny_cnn, images, "features")
    for p in tiny_cnn.parameters():
        p.requires_grad_(False)
    frozen = compute_cam(tiny_cnn, images, "features")
    torch.testing.assert_close(frozen, unfrozen)
    assert not any(p.requires_grad for p in tiny_cnn.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_give_float32_maps_close_to_float32(tiny_cnn, images, dtype):
    reference = compute_cam(tiny_cnn, images, "features", 1)
    low = tiny_cnn.to(dtype)
    maps = compute_cam(low, images, "features", 1)  # float32 inputs are cast to the model
    assert maps.dtype == torch.float32 and maps.shape == reference.shape
    assert torch.isfinite(maps).all()
    assert (maps - reference).abs().mean() < 0.03
    assert next(low.parameters()).dtype == dtype


def test_under_cpu_autocast(tiny_cnn, images):
    reference = compute_cam(tiny_cnn, images, "features", 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = compute_cam(tiny_cnn, images, "features", 1)
    assert maps.dtype == torch.float32
    assert (maps - reference).abs().mean() < 0.03


class PoisonSample(nn.Module):
    """Puts NaN into sample 0's activations."""

    def forward(self, x):
        poison = torch.zeros_like(x)
        poison[0, 0, 0, 0] = float("nan")
        return x + poison


def test_non_finite_activations_give_a_zero_map_and_a_warning(tiny_cnn, images):
    clean = compute_cam(tiny_cnn, images, "features")
    tiny_cnn.features.append(PoisonSample())
    with pytest.warns(RuntimeWarning, match=r"non-finite values.*'features'.*samples \[0\]"):
        maps = compute_cam(tiny_cnn, images, "features")
    assert torch.isfinite(maps).all()
    assert torch.equal(maps[0], torch.zeros_like(maps[0]))
    torch.testing.assert_close(maps[1:], clean[1:])


@pytest.mark.parametrize("method", CAM_METHODS)
def test_an_all_zero_layer_gives_all_zero_maps_never_nan(tiny_cnn, images, method):
    nn.init.zeros_(tiny_cnn.features[4].weight)
    nn.init.zeros_(tiny_cnn.features[4].bias)
    tiny_cnn.features[5].eval()
    nn.init.zeros_(tiny_cnn.features[5].bias)
    maps = compute_cam(tiny_cnn, images, "features", method=method)
    assert torch.equal(maps, torch.zeros_like(maps))


def test_output_sizes(tiny_cnn, images):
    assert compute_cam(tiny_cnn, images, "features").shape == (3, 32, 32)
    assert compute_cam(tiny_cnn, images, "features", output_size=None).shape == (3, 16, 16)
    assert compute_cam(tiny_cnn, images, "features", output_size=(20, 24)).shape == (3, 20, 24)


def test_raw_maps_are_relu_of_the_weighted_sum(tiny_cnn, images):
    raw = compute_cam(tiny_cnn, images, "features", output_size=None, normalize=False)
    assert raw.min() == 0 and raw.max() > 0
    normalized = compute_cam(tiny_cnn, images, "features", output_size=None)
    expected = raw / raw.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(normalized, expected)


def test_explain_batch_returns_the_logits_of_the_same_forward(tiny_cnn, images):
    result = explain_batch(tiny_cnn, images, "features")
    with torch.no_grad():
        logits = tiny_cnn.eval()(images)
    torch.testing.assert_close(result.logits, logits)
    assert result.layer_name == "features" and not result.logits.requires_grad
    assert explain_batch(tiny_cnn, images, None).layer_name == "features"


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"method": "gradcamm"}, ValueError,
         r"^method='gradcamm': valid values are 'gradcam', 'gradcam\+\+'.*"
         r"Did you mean 'gradcam'\?"),
        ({"method": 3}, TypeError, r"^method=3: must be one of 'gradcam'"),
        ({"batch_size": 0}, ValueError, r"^batch_size=0: must be an int >= 1"),
        ({"batch_size": 2.0}, TypeError, r"^batch_size=2.0: must be an int >= 1, got float"),
        ({"output_size": (0, 4)}, ValueError, r"output_size must be .*got \(0, 4\)"),
        ({"output_size": "full"}, ValueError, "output_size must be 'input'.*got 'full'"),
    ],
)
def test_bad_options_get_clear_errors(tiny_cnn, images, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        compute_cam(tiny_cnn, images, "features", **kwargs)


@pytest.mark.parametrize(
    ("inputs", "error", "pattern"),
    [
        (torch.zeros(3, 32, 32), ValueError, r"\(N, C, H, W\).*got shape \(3, 32, 32\).*unsqueeze"),
        (torch.zeros(1, 3, 4, 32, 32), ValueError, r"batch of images \(N, C, H, W\) for a model "
                                                   r"whose first convolution is a Conv2d"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating point, got .*uint8"),
        ([[0.0]], TypeError, r"must be a tensor.*got list"),
    ],
)
def test_bad_inputs_get_clear_errors(tiny_cnn, inputs, error, pattern):
    with pytest.raises(error, match=pattern):
        compute_cam(tiny_cnn, inputs, "features")


# ----- details a plausible bug would change (each was once a surviving mutant) -------------

class Blob(nn.Module):
    """A 1x1 convolution with positive weights over a one-channel image, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 3, 1, bias=False)
        self.after = nn.Identity()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1, 1))

    def forward(self, x):
        return self.head(self.after(self.features(x)))


def blob_image() -> torch.Tensor:
    image = 0.1 * torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    image[0, 0, 2:6, 9:13] += 1.0  # the bright square the layer responds to
    return image


def test_eigencam_is_high_where_the_layer_is_most_active():
    maps = compute_cam(Blob(), blob_image(), "features", method="eigencam")
    inside = maps[0, 2:6, 9:13]
    outside = maps[0].clone()
    outside[2:6, 9:13] = 0
    assert inside.min() > 0.9 and outside.max() < 0.2  # the documented sign convention


class ZeroInPlace(nn.Module):
    def forward(self, x):
        return x.zero_()  # rewrites the layer's output in place, as ReLU(inplace) may


def test_eigencam_reads_the_layer_output_as_it_left_the_layer():
    model = Blob()
    untouched = compute_cam(model, blob_image(), "features", method="eigencam")
    model.after = ZeroInPlace()  # no gradients are tracked: nothing else copies the output
    rewritten = compute_cam(model, blob_image(), "features", method="eigencam")
    assert untouched.max() == 1
    torch.testing.assert_close(rewritten, untouched)


def test_auto_detection_never_picks_the_model_itself():
    from gradcam_callback import find_last_spatial_layer

    fully_convolutional = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                        nn.Conv2d(4, 2, 1))  # its own output is spatial
    inputs = torch.randn(2, 3, 8, 8)
    # a (N, K, H, W) output reads as segmentation: the layer before its logit maps
    assert find_last_spatial_layer(fully_convolutional, inputs) == "1"
    assert explain_batch(fully_convolutional, inputs, None, None).layer_name == "1"
    # a score of its own: the last layer it flows through, the logit maps included
    result = explain_batch(fully_convolutional, inputs, None,
                           lambda out: out[:, 1].mean(dim=(1, 2)))
    assert result.layer_name == "2"
    # asked as multiclass, the CAM says why it cannot
    with pytest.raises(ValueError, match=r"class targets need a model output of shape"):
        explain_batch(fully_convolutional, inputs, None, None, task="multiclass")


@pytest.mark.parametrize("targets", [torch.tensor([True, False, True]), True, [1, False, 2]])
def test_bools_are_not_class_targets(tiny_cnn, images, targets):
    with pytest.raises(TypeError, match=r"targets must be .*(bool|True|False)"):
        compute_cam(tiny_cnn, images, "features", targets)
