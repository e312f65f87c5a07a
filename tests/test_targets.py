"""What score is explained: predicted class, given classes, callables, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_callback import compute_cam, explain_batch


@pytest.fixture
def predicted(tiny_cnn, images):
    with torch.no_grad():
        return tiny_cnn.eval()(images).argmax(1)


def test_none_explains_each_samples_predicted_class(tiny_cnn, images, predicted):
    assert torch.equal(compute_cam(tiny_cnn, images, "features"),
                       compute_cam(tiny_cnn, images, "features", predicted))


def test_int_sequence_tensor_and_numpy_ints_agree(tiny_cnn, images):
    reference = compute_cam(tiny_cnn, images, "features", torch.tensor([2, 2, 2]))
    for spec in (2, [2, 2, 2], (2, 2, 2), np.int64(2), [np.int64(2)] * 3, torch.tensor(2)):
        assert torch.equal(compute_cam(tiny_cnn, images, "features", spec), reference), spec


def test_different_classes_give_different_maps(tiny_cnn, images):
    a = compute_cam(tiny_cnn, images, "features", 0, normalize=False)
    b = compute_cam(tiny_cnn, images, "features", 3, normalize=False)
    assert not torch.allclose(a, b)


def test_callable_target_scores(tiny_cnn, images):
    by_callable = compute_cam(tiny_cnn, images, "features", lambda out: out[:, 2])
    assert torch.equal(by_callable, compute_cam(tiny_cnn, images, "features", 2))


@pytest.mark.parametrize(
    ("targets", "error", "pattern"),
    [
        ([0, 1], ValueError, "one class per sample: 3 values, got 2"),
        (torch.tensor([0, 1]), ValueError, r"one class per sample: shape \(3,\), got \(2,\)"),
        (5, ValueError, r"class 5 is out of range for a model with 5 outputs \(valid: 0\.\.4\)"),
        ([0, -1, 2], ValueError, "target class -1 is out of range"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "integer tensor, got dtype torch.float32"),
        ([0, 1.5, 2], TypeError, "got 1.5"),
        (True, TypeError, "got a bool"),
        ("cat", TypeError, "targets must be None.*got str"),
        (lambda out: out, ValueError, r"shape \(N,\) = \(3,\).*got \(3, 5\)"),
        (lambda out: 1.0, ValueError, r"got float"),
    ],
)
def test_bad_targets_get_clear_errors(tiny_cnn, images, targets, error, pattern):
    with pytest.raises(error, match=pattern):
        compute_cam(tiny_cnn, images, "features", targets)


def test_eigencam_still_validates_targets(tiny_cnn, images):
    with pytest.raises(ValueError, match="target class 9 is out of range"):
        compute_cam(tiny_cnn, images, "features", 9, method="eigencam")


class WithAux(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.main = nn.Linear(4, 3)
        self.aux = nn.Linear(4, 3)
        self.as_dict = as_dict

    def forward(self, x):
        pooled = self.conv(x).mean((2, 3))
        if self.as_dict:
            return {"main": self.main(pooled), "aux": self.aux(pooled)}
        return self.main(pooled), self.aux(pooled)


@pytest.mark.parametrize(("as_dict", "hint"), [(False, r"out\[0\]"), (True, r"out\['main'\]")])
def test_non_tensor_outputs_need_output_transform_and_say_how(images, as_dict, hint):
    model = WithAux(as_dict)
    with pytest.raises(TypeError, match=f"returned a (tuple|dict).*output_transform.*{hint}"):
        compute_cam(model, images, "conv")
    pick = (lambda out: out["main"]) if as_dict else (lambda out: out[0])
    result = explain_batch(model, images, "conv", output_transform=pick)
    assert result.cams.shape == (3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(result.logits, pick(model(images)))


def test_scores_that_ignore_the_layer_are_reported(images):
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)).detach())

    with pytest.raises(ValueError, match="do not depend on layer 'conv'"):
        compute_cam(Detached(), images, "conv")
    assert compute_cam(Detached(), images, "conv", method="eigencam").shape == (3, 32, 32)
