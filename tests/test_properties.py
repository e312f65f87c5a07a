"""Properties that hold for any input: shape, range, and invariance to the scores' scale."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradcam_callback import compute_cam
from tests.conftest import TinyCNN

SCALE_INVARIANT = ["gradcam", "xgradcam", "hirescam", "layercam", "eigencam"]


class ScaledLogits(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, x):
        return self.model(x) * self.scale


@pytest.fixture(scope="module")
def model() -> TinyCNN:
    torch.manual_seed(11)
    return TinyCNN().eval()


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    height=st.integers(6, 40),
    width=st.integers(6, 40),
    method=st.sampled_from([*SCALE_INVARIANT, "gradcam++"]),
    seed=st.integers(0, 2**16),
    target=st.integers(0, 4),
)
def test_shape_and_range(model, batch, height, width, method, seed, target):
    inputs = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    maps = compute_cam(model, inputs, "features", target, method=method)
    assert maps.shape == (batch, height, width) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.flatten(1).amax(1)
    assert torch.all((peaks == 1) | (peaks == 0))  # each map is scaled to reach 1, or all zero


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(SCALE_INVARIANT),
    exponent=st.sampled_from([-8, -4, 3]),
    seed=st.integers(0, 2**16),
)
def test_invariant_to_scaling_the_logits(model, method, exponent, seed):
    inputs = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(seed))
    plain = compute_cam(model, inputs, "features.4", 2, method=method)
    scaled = compute_cam(ScaledLogits(model, 10.0**exponent), inputs, "model.features.4", 2,
                         method=method)
    torch.testing.assert_close(scaled, plain, atol=1e-3, rtol=0)
