"""compute_cam leaves the model and the process exactly as it found them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_callback import CAM_METHODS, compute_cam

HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_load_state_dict_pre_hooks",
)


def hook_snapshot(model: nn.Module) -> dict:
    return {
        (name, attr): dict(getattr(module, attr))
        for name, module in model.named_modules()
        for attr in HOOK_DICTS
        if hasattr(module, attr)
    }


@pytest.mark.parametrize("method", CAM_METHODS)
def test_training_flags_are_restored_module_by_module(tiny_cnn, images, method):
    tiny_cnn.train()
    tiny_cnn.features[1].eval()  # a BatchNorm the user froze
    before = {name: m.training for name, m in tiny_cnn.named_modules()}
    compute_cam(tiny_cnn, images, "features", method=method)
    assert {name: m.training for name, m in tiny_cnn.named_modules()} == before
    assert before["features.1"] is False and before["features.5"] is True


def test_batchnorm_statistics_and_weights_are_untouched(tiny_cnn, images):
    tiny_cnn.train()
    state = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    compute_cam(tiny_cnn, images, "features.4")
    for key, value in tiny_cnn.state_dict().items():
        assert torch.equal(value, state[key]), key  # running_mean/var, num_batches_tracked


def test_runs_in_eval_mode_so_dropout_and_batch_statistics_are_off(tiny_cnn, images):
    tiny_cnn.train()
    first = compute_cam(tiny_cnn, images, "features")
    second = compute_cam(tiny_cnn, images, "features")
    single = compute_cam(tiny_cnn, images[:1], "features")
    assert torch.equal(first, second)  # no dropout noise
    torch.testing.assert_close(first[:1], single)  # running stats, not batch stats


def test_parameter_grads_are_untouched(tiny_cnn, images):
    params = list(tiny_cnn.parameters())
    for i, p in enumerate(params):
        p.grad = None if i % 2 else torch.randn_like(p)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    compute_cam(tiny_cnn, images, "features.4", method="gradcam++")
    for p, old in zip(params, before, strict=True):
        if old is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, old)


def test_global_rng_states_are_restored_even_if_the_model_draws_random_numbers(images):
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            random.random()
            np.random.rand()
            x = self.conv(x + 0.01 * torch.randn_like(x))
            return self.head(x.mean((2, 3)))

    model = Noisy()
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    compute_cam(model, images, None)
    after = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]


@pytest.mark.parametrize("target_layer", ["features.4", None])
def test_no_hooks_are_left_behind(tiny_cnn, images, target_layer):
    before = hook_snapshot(tiny_cnn)
    compute_cam(tiny_cnn, images, target_layer)
    assert hook_snapshot(tiny_cnn) == before


def test_a_forward_that_raises_leaves_nothing_changed(images):
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            self.bn(self.conv(x))
            raise RuntimeError("boom in forward")

    model = Fails().train()
    model.register_forward_hook(lambda *a: None)  # a user's own hook must survive
    before_hooks = hook_snapshot(model)
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    for target in ("conv", None):
        with pytest.raises(RuntimeError, match="boom in forward"):
            compute_cam(model, images, target)
        assert hook_snapshot(model) == before_hooks
        assert all(m.training for m in model.modules())
        assert torch.is_grad_enabled()
        assert torch.equal(torch.get_rng_state(), rng)


def test_grad_mode_and_inputs_are_untouched(tiny_cnn, images):
    original = images.clone()
    with torch.no_grad():
        compute_cam(tiny_cnn, images, "features")
        assert not torch.is_grad_enabled()
    compute_cam(tiny_cnn, images, "features")
    assert torch.is_grad_enabled()
    assert torch.equal(images, original) and not images.requires_grad
    assert all(p.requires_grad for p in tiny_cnn.parameters())
