"""The engine on signals (N, C, T) and volumes (N, C, D, H, W): every method equals its
formula written out here from scratch, over all spatial positions alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_callback import CAM_METHODS, compute_cam, explain_batch


def signal_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(6, 8, 3, padding=1), nn.ReLU(),  # "4": the layer explained
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))


def volume_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(),  # "4"
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 2))


def from_scratch(model: nn.Module, inputs: torch.Tensor, method: str) -> torch.Tensor:
    """The method's formula over activations A and gradients G of layer "4", for the
    predicted class; ReLU, linear/trilinear resizing to the input, min-max per sample."""
    store = {}
    handle = model[4].register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        out = model(inputs)
    finally:
        handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), a)
    a, g = a.detach(), g.detach()
    dims = tuple(range(2, a.dim()))
    if method == "gradcam":
        cam = (g.mean(dims, keepdim=True) * a).sum(1)
    elif method == "gradcam++":
        alpha = g**2 / (2 * g**2 + a.sum(dims, keepdim=True) * g**3 + 1e-6)
        cam = ((alpha * g.clamp(min=0)).sum(dims, keepdim=True) * a).sum(1)
    elif method == "xgradcam":
        weights = (g * a).sum(dims, keepdim=True) / (a.sum(dims, keepdim=True) + 1e-7)
        cam = (weights * a).sum(1)
    elif method == "hirescam":
        cam = (g * a).sum(1)
    elif method == "layercam":
        cam = (g.clamp(min=0) * a).sum(1)
    else:  # eigencam: positions x channels, centred, on the first principal component
        positions = a.flatten(2).transpose(1, 2).double()
        centred = positions - positions.mean(1, keepdim=True)
        cams = []
        for x, p in zip(centred, positions, strict=True):
            _, _, vh = torch.linalg.svd(x, full_matrices=False)
            projection = x @ vh[0]
            activity = p.sum(1)
            if float((projection * (activity - activity.mean())).sum()) < 0:
                projection = -projection
            cams.append(projection.float())
        cam = torch.stack(cams).view(a.shape[0], *a.shape[2:])
    cam = cam.relu()
    mode = {1: "linear", 3: "trilinear"}[cam.dim() - 1]
    cam = F.interpolate(cam[:, None], size=inputs.shape[2:], mode=mode,
                        align_corners=False)[:, 0]
    flat = cam.flatten(1)
    low = flat.min(1).values.view(-1, *[1] * (cam.dim() - 1))
    high = flat.max(1).values.view(-1, *[1] * (cam.dim() - 1))
    return torch.where(high > low, (cam - low) / (high - low), torch.zeros_like(cam))


@pytest.mark.parametrize("method", CAM_METHODS)
@pytest.mark.parametrize("kind", ["signal", "volume"])
def test_every_method_equals_its_formula_in_1d_and_3d(kind, method):
    torch.manual_seed(0)
    model = (signal_net() if kind == "signal" else volume_net()).eval()
    inputs = torch.randn(3, 2, 40) if kind == "signal" else torch.randn(2, 1, 12, 10, 8)
    cams = compute_cam(model, inputs, "4", method=method)
    assert cams.shape == (inputs.shape[0], *inputs.shape[2:])
    torch.testing.assert_close(cams, from_scratch(model, inputs, method), atol=2e-5, rtol=0)


@pytest.mark.parametrize("kind", ["signal", "volume"])
def test_the_layer_is_chosen_and_read_channels_first(kind):
    torch.manual_seed(0)
    model = signal_net() if kind == "signal" else volume_net()
    inputs = torch.randn(3, 2, 40) if kind == "signal" else torch.randn(2, 1, 12, 10, 8)
    result = explain_batch(model, inputs, None)
    assert result.layer_name == "4"
    assert result.reading == ("channels-first, 20 steps" if kind == "signal"
                              else "channels-first, 6x5x4 grid")
    own = explain_batch(model, inputs, "4", output_size=None).cams
    assert own.shape == (inputs.shape[0], *((20,) if kind == "signal" else (6, 5, 4)))
    chunked = compute_cam(model, inputs, None, batch_size=1)
    torch.testing.assert_close(chunked, result.cams)


def test_inputs_of_another_rank_than_the_model_takes_fail_clearly():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"batch of signals \(N, C, T\), images .* got "
                                         r"shape \(2, 40\); for a single sample use "
                                         r"sample.unsqueeze\(0\)"):
        compute_cam(signal_net(), torch.randn(2, 40), "4")
    with pytest.raises(ValueError, match=r"batch of signals \(N, C, T\) for a model whose "
                                         r"first convolution is a Conv1d, got shape "
                                         r"\(2, 2, 8, 8\)"):
        compute_cam(signal_net(), torch.randn(2, 2, 8, 8), "4")
    with pytest.raises(ValueError, match=r"batch of volumes \(N, C, D, H, W\)"):
        compute_cam(volume_net(), torch.randn(2, 1, 12, 10), "4")
    with pytest.raises(ValueError, match=r"output_size must be .* \(t,\) positive ints"):
        compute_cam(signal_net(), torch.randn(2, 2, 40), "4", output_size=(4, 4))
    with pytest.raises(ValueError, match=r"'tokens' reads image tokens; a signal"):
        compute_cam(signal_net(), torch.randn(2, 2, 40), "4", reshape_transform="tokens")


def test_a_channels_last_signal_layer_is_read_with_nhwc():
    torch.manual_seed(0)

    class Last(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3, padding=1)
            self.mix = nn.Linear(4, 4)  # on (N, T, C): channels last
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            tokens = self.mix(self.conv(x).transpose(1, 2))
            return self.head(tokens.mean(1))

    model, inputs = Last(), torch.randn(2, 2, 16)
    last = explain_batch(model, inputs, "mix", reshape_transform="nhwc")
    assert last.reading == "channels-last, 16 steps"
    store = {}
    handle = model.mix.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    out = model(inputs)
    handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), a)
    cam = (g.mean(1, keepdim=True) * a).sum(2).relu().detach()
    low, high = cam.min(1, keepdim=True).values, cam.max(1, keepdim=True).values
    torch.testing.assert_close(last.cams, (cam - low) / (high - low), atol=2e-5, rtol=0)
