"""Our maps against pytorch-grad-cam and against a from-scratch reference."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from gradcam_callback import CAM_METHODS, compute_cam, vit_reshape_transform

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

PGC_CLASSES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
}


def pytorch_grad_cam_maps(model, layer, inputs, classes, method, reshape_transform=None):
    explainer = PGC_CLASSES[method](
        model=model, target_layers=[layer], reshape_transform=reshape_transform
    )
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    return torch.from_numpy(explainer(input_tensor=inputs, targets=targets))


def assert_matches_up_to_eigen_sign(ours: Tensor, flipped: Tensor, ref: Tensor, method: str):
    """Eigen-CAM's component has no intrinsic sign; pytorch-grad-cam keeps LAPACK's.

    ``flipped`` is our map of the negated activations, i.e. the other sign choice.
    """
    diff = (ours - ref).abs().flatten(1).amax(1)
    if method == "eigencam":
        diff = torch.minimum(diff, (flipped - ref).abs().flatten(1).amax(1))
    assert diff.max().item() < 1e-4, f"{method}: max |ours - pytorch-grad-cam| = {diff}"


@pytest.mark.slow
@pytest.mark.parametrize("method", CAM_METHODS)
def test_matches_pytorch_grad_cam_on_resnet18(resnet18, method):
    inputs = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    classes = [1, 7, 4]
    ref = pytorch_grad_cam_maps(resnet18, resnet18.layer4, inputs, classes, method)
    ours = compute_cam(resnet18, inputs, "layer4", classes, method=method)
    flipped = compute_cam(resnet18, inputs, "layer4", classes, method=method,
                          reshape_transform=torch.neg)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert_matches_up_to_eigen_sign(ours, flipped, ref, method)
    assert ours.flatten(1).std(1).min() > 0.05  # real maps, not a trivially equal constant


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "layercam", "eigencam"])
def test_matches_pytorch_grad_cam_on_a_vit_with_reshape_transform(method):
    torch.manual_seed(3)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64, num_classes=5,
    ).eval()
    layer = vit.encoder.layers.encoder_layer_1.ln_1
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    to_map = vit_reshape_transform(num_prefix_tokens=1)
    ref = pytorch_grad_cam_maps(vit, layer, inputs, [0, 3], method, reshape_transform=to_map)
    ours = compute_cam(vit, inputs, layer, [0, 3], method=method, reshape_transform=to_map)
    flipped = compute_cam(vit, inputs, layer, [0, 3], method=method,
                          reshape_transform=lambda t: -to_map(t))
    assert ours.shape == (2, 32, 32)
    assert_matches_up_to_eigen_sign(ours, flipped, ref, method)


# From-scratch reference: the formulas written out independently, on activations and
# gradients taken from a copy of the model whose in-place ops are disabled and whose
# forward is split by hand at the target layer (no hooks involved).
def reference_raw_map(acts: Tensor, grads: Tensor, method: str) -> Tensor:
    a, g = acts.double(), grads.double()
    if method == "gradcam":
        cam = torch.einsum("nk,nkij->nij", g.mean((2, 3)), a)
    elif method == "gradcam++":
        alpha = g**2 / (2 * g**2 + a.sum((2, 3), keepdim=True) * g**3 + 1e-6)
        cam = torch.einsum("nk,nkij->nij", (alpha * g.clamp(min=0)).sum((2, 3)), a)
    elif method == "xgradcam":
        cam = torch.einsum("nk,nkij->nij", (g * a).sum((2, 3)) / (a.sum((2, 3)) + 1e-7), a)
    elif method == "hirescam":
        cam = (g * a).sum(1)
    elif method == "layercam":
        cam = (g.clamp(min=0) * a).sum(1)
    else:
        raise AssertionError(method)
    return cam.clamp(min=0).float()


def without_inplace(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return clone


def split_vgg11_at_features_18(model, inputs):
    ref = without_inplace(model)
    acts = ref.features[:19](inputs).detach().requires_grad_()
    logits = ref.classifier(torch.flatten(ref.avgpool(ref.features[19:](acts)), 1))
    return acts, logits


def split_densenet_at_features(model, inputs):
    ref = without_inplace(model)
    acts = ref.features(inputs).detach().requires_grad_()
    logits = ref.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(acts), 1), 1))
    return acts, logits


CASES = {
    # features.18 is a Conv2d followed by ReLU(inplace=True)
    "vgg11/features.18": (lambda: torchvision.models.vgg11(num_classes=10), "features.18",
                          split_vgg11_at_features_18),
    # DenseNet.forward applies F.relu(features, inplace=True) to this output
    "densenet121/features": (lambda: torchvision.models.densenet121(num_classes=10),
                             "features", split_densenet_at_features),
}


@pytest.fixture(scope="module", params=list(CASES))
def inplace_case(request):
    build, layer, split = CASES[request.param]
    torch.manual_seed(5)
    model = build().eval()
    inputs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    acts, logits = split(model, inputs)
    classes = torch.tensor([2, 9])
    (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), acts)
    return model, layer, inputs, classes, acts.detach(), grads


@pytest.mark.parametrize("method", [m for m in CAM_METHODS if m != "eigencam"])
def test_raw_maps_match_reference_despite_inplace_ops_after_the_layer(inplace_case, method):
    model, layer, inputs, classes, acts, grads = inplace_case
    expected = reference_raw_map(acts, grads, method)
    ours = compute_cam(model, inputs, layer, classes, method=method,
                       output_size=None, normalize=False)
    assert ours.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0
    assert (ours - expected).abs().max().item() <= 1e-4 * scale


def test_the_inplace_cases_are_real(inplace_case):
    """A hook that keeps the output tensor itself sees it rewritten by the in-place op."""
    model, layer, inputs, _, acts, _ = inplace_case
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _a, out: seen.setdefault("out", out)
    )
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    assert not torch.allclose(seen["out"], acts)  # the naive capture is wrong here
    assert (acts < 0).any() and (seen["out"] >= 0).all()  # ...because ReLU rewrote it


@pytest.mark.parametrize("layer", ["features.0", "features"])  # 1024x8 and 256x16: tall
def test_eigencam_is_the_first_principal_component_of_an_svd(tiny_cnn, layer):
    tiny_cnn.eval()
    inputs = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    seen = {}
    handle = tiny_cnn.get_submodule(layer).register_forward_hook(
        lambda _m, _a, out: seen.setdefault("a", out.detach().clone()))
    with torch.no_grad():
        tiny_cnn(inputs)
    handle.remove()
    acts = seen["a"].double()
    n, c, h, w = acts.shape
    x = acts.reshape(n, c, h * w).transpose(1, 2)
    x = x - x.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    reference = (x @ vh[:, 0, :, None]).squeeze(-1).reshape(n, h, w).float()
    ours = compute_cam(tiny_cnn, inputs, layer, method="eigencam", output_size=None,
                       normalize=False)
    for i in range(n):  # ours is relu(+-reference), the sign chosen by our convention
        candidates = [reference[i].clamp(min=0), (-reference[i]).clamp(min=0)]
        error = min((ours[i] - r).abs().max().item() for r in candidates)
        assert error <= 1e-4 * reference[i].abs().max().item()


def test_eigencam_wide_activations_match_an_svd():
    """Fewer positions than channels (resnet layer4 at 7x7x512 is such a case)."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 3)).eval()
    inputs = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        acts = model[0](inputs).double()  # (2, 64, 6, 6): 36 positions < 64 channels
    x = acts.flatten(2).transpose(1, 2)
    x = x - x.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    reference = (x @ vh[:, 0, :, None]).squeeze(-1).reshape(2, 6, 6).float()
    ours = compute_cam(model, inputs, "0", method="eigencam", output_size=None, normalize=False)
    for i in range(2):
        error = min((ours[i] - r.clamp(min=0)).abs().max().item()
                    for r in (reference[i], -reference[i]))
        assert error <= 1e-4 * reference[i].abs().max().item()
