"""Zero configuration on real architectures: timm, torchvision, Hugging Face, compiled.

Every model is built in code with random weights (nothing is downloaded) and explained at
a small input size with ``compute_cam(model, x, None)`` and nothing else. For each: the
layer chosen and its reading are the ones a practitioner would pick, the maps are finite,
in [0, 1] and not all zero, and they equal (to 1e-4) the maps of that layer given
explicitly with a hand-written ``reshape_transform``.

Widths are narrowed where the full model takes seconds to build (convnext_tiny, Swin,
ViT-B/16: same depths, so the same layer names); ``test_full_width_models_choose_the_same``
(slow) checks the real configurations.
"""

from __future__ import annotations

import logging
import warnings
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torchvision
from torch import Tensor, nn

from gradcam_callback import compute_cam, explain_batch, vit_reshape_transform

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

NCHW: Callable[[Tensor], Tensor] = lambda t: t  # noqa: E731 - named for the table
NHWC: Callable[[Tensor], Tensor] = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731


@dataclass
class Case:
    """A model, its input size, and what a practitioner would explain."""

    build: Callable[[], nn.Module]
    size: tuple[int, int]
    layer: str
    reading: str
    transform: Callable[[Tensor], Tensor]


def _timm(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=5, **kwargs)


def _torchvision_vit_b16() -> nn.Module:
    # vit_b_16's depth and names, narrower (the 86M-parameter original takes ~10 s here)
    vit = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=12,
                                               num_heads=4, hidden_dim=64, mlp_dim=128,
                                               num_classes=5)
    return _with_head(vit)


def _with_head(vit: nn.Module) -> nn.Module:
    # torchvision starts the classifier at zero: every score would have zero gradient
    nn.init.normal_(vit.heads.head.weight, std=0.05)
    return vit


def _torchvision_swin_t() -> nn.Module:
    # swin_t's depths and names, narrower (embed_dim 96 -> 24)
    return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=24,
                                              depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                              window_size=[7, 7], num_classes=5)


def _hf_vit() -> nn.Module:
    config = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=5)
    return transformers.ViTForImageClassification(config)


def _hf_convnext() -> nn.Module:
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1],
                                         num_labels=5)
    return transformers.ConvNextForImageClassification(config)


def _hf_swin() -> nn.Module:
    config = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=16,
                                     depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                                     window_size=2, num_labels=5)
    return transformers.SwinForImageClassification(config)


def _register_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    # vit_small_patch14_reg4_dinov2's layout: class token + 4 registers, 14-pixel patches
    return VisionTransformer(img_size=56, patch_size=14, embed_dim=48, depth=2, num_heads=2,
                             reg_tokens=4, num_classes=5)


def _tokens(prefix: int, grid: tuple[int, int]) -> Callable[[Tensor], Tensor]:
    return vit_reshape_transform(num_prefix_tokens=prefix, grid=grid)


CASES = {
    "timm resnet18": Case(_timm("resnet18"), (64, 64), "layer4",
                          "channels-first, 2x2 grid", NCHW),
    "timm resnet18 64x96": Case(_timm("resnet18"), (64, 96), "layer4",
                                "channels-first, 2x3 grid", NCHW),
    "timm convnext_tiny": Case(_timm("convnext_tiny", dims=(24, 48, 96, 192)), (64, 64),
                               "stages", "channels-first, 2x2 grid", NCHW),
    "timm efficientnet_b0": Case(_timm("efficientnet_b0"), (64, 64), "bn2",
                                 "channels-first, 2x2 grid", NCHW),
    "timm vit_tiny_patch16_224": Case(_timm("vit_tiny_patch16_224", img_size=64), (64, 64),
                                      "blocks.11.norm1", "tokens, 1 prefix + 4x4 grid",
                                      _tokens(1, (4, 4))),
    "timm vit_tiny_patch16_224 64x96": Case(
        _timm("vit_tiny_patch16_224", img_size=(64, 96)), (64, 96), "blocks.11.norm1",
        "tokens, 1 prefix + 4x6 grid", _tokens(1, (4, 6))),
    "timm deit_tiny_distilled_patch16_224": Case(
        _timm("deit_tiny_distilled_patch16_224", img_size=64), (64, 64), "blocks.11.norm1",
        "tokens, 2 prefix + 4x4 grid", _tokens(2, (4, 4))),
    "timm ViT with 4 registers": Case(_register_vit, (56, 56), "blocks.1.norm1",
                                      "tokens, 5 prefix + 4x4 grid", _tokens(5, (4, 4))),
    "timm swin_tiny_patch4_window7_224": Case(
        _timm("swin_tiny_patch4_window7_224", img_size=64, embed_dim=24), (64, 64), "norm",
        "channels-last, 2x2 grid", NHWC),
    "torchvision swin_t": Case(_torchvision_swin_t, (64, 64), "norm",
                               "channels-last, 2x2 grid", NHWC),
    "torchvision vit_b_16": Case(_torchvision_vit_b16, (64, 64),
                                 "encoder.layers.encoder_layer_11.ln_1",
                                 "tokens, 1 prefix + 4x4 grid", _tokens(1, (4, 4))),
    "HF ViTForImageClassification": Case(_hf_vit, (64, 64), "vit.layers.1.layernorm_before",
                                         "tokens, 1 prefix + 4x4 grid", _tokens(1, (4, 4))),
    "HF ConvNextForImageClassification": Case(_hf_convnext, (64, 64),
                                              "convnext.encoder.stages.3",
                                              "channels-first, 2x2 grid", NCHW),
    "HF SwinForImageClassification": Case(_hf_swin, (64, 64), "swin.layernorm",
                                          "tokens, 2x2 grid", _tokens(0, (2, 2))),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _build(case: Case) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    model = case.build().eval()
    inputs = torch.randn(2, 3, *case.size, generator=torch.Generator().manual_seed(1))
    return model, inputs


def _check_maps(cams: Tensor, size: tuple[int, int]) -> None:
    assert cams.shape == (2, *size)
    assert bool(torch.isfinite(cams).all())
    assert float(cams.min()) >= 0 and float(cams.max()) <= 1
    assert bool((cams.flatten(1).amax(1) > 0).all()), "a map is all zero"


@pytest.mark.parametrize("name", list(CASES))
def test_zero_configuration_picks_the_practitioners_layer_and_reading(name):
    case = CASES[name]
    model, inputs = _build(case)
    auto = explain_batch(model, inputs, None)  # the model's output: a tensor or a ModelOutput
    assert (auto.layer_name, auto.reading) == (case.layer, case.reading)
    _check_maps(auto.cams, case.size)
    explicit = compute_cam(model, inputs, case.layer, reshape_transform=case.transform,
                           output_transform=_logits)
    assert float((auto.cams - explicit).abs().max()) <= 1e-4


def _logits(output: object) -> Tensor:
    return output if isinstance(output, Tensor) else output.logits  # type: ignore[attr-defined]


# --- compiled models ------------------------------------------------------------------


def _counters() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    return {key: dict(value) for key, value in counters.items()}


def _compiler_state() -> tuple[object, dict[str, dict[str, int]]]:
    from torch._dynamo import eval_frame

    return getattr(eval_frame, "_stance", None), _counters()


@pytest.fixture
def resnet18_and_maps() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    inputs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, inputs, compute_cam(model, inputs, "layer4")


def _check_compiled(compiled: nn.Module, inputs: Tensor, eager_maps: Tensor,
                    names: tuple[str, ...]) -> None:
    """Explain ``compiled`` before and after its first call: the maps of the eager model,
    and not one compile, recompile or compiler setting changed by the CAM."""
    torch._dynamo.reset()
    state = _compiler_state()
    cold = explain_batch(compiled, inputs, None)  # before the compiled model ever ran
    assert _compiler_state() == state, "the CAM compiled something"
    assert cold.layer_name == names[0]
    torch.testing.assert_close(cold.cams, eager_maps, rtol=0, atol=1e-6)

    with torch.no_grad():
        compiled(inputs)  # as in any training loop: the graph is compiled now
    state = _compiler_state()
    assert state[1]["stats"]["unique_graphs"] >= 1
    for layer in (None, *names):  # warm: hooks still fire, no recompile
        warm = explain_batch(compiled, inputs, layer)
        assert warm.layer_name == names[0]
        torch.testing.assert_close(warm.cams, eager_maps, rtol=0, atol=1e-6)
    with torch.no_grad():
        compiled(inputs)
    assert _compiler_state() == state, "the CAM made the compiled model recompile"


def test_a_compiled_resnet18_cold_and_warm(resnet18_and_maps):
    model, inputs, eager_maps = resnet18_and_maps
    compiled = torch.compile(model, backend="eager")  # fast; inductor in the slow test
    _check_compiled(compiled, inputs, eager_maps, ("layer4", "_orig_mod.layer4"))


def _small_cnn() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
    model = nn.Sequential()
    model.add_module("backbone", backbone)
    model.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                           nn.Linear(16, 4)))
    return model.eval(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_a_compiled_submodule_cold_and_warm():
    model, inputs = _small_cnn()
    eager_maps = compute_cam(model, inputs, "backbone")
    model.backbone = torch.compile(model.backbone, backend="eager")
    _check_compiled(model, inputs, eager_maps, ("backbone", "backbone._orig_mod"))


@pytest.mark.slow
def test_a_model_compiled_with_inductor_cold_and_warm():
    # inductor builds C++ kernels with the system compiler: a small CNN keeps it to seconds
    # (resnet18 takes minutes on two busy cores; its eager-backend test is above)
    model, inputs = _small_cnn()
    eager_maps = compute_cam(model, inputs, "backbone")
    _check_compiled(torch.compile(model), inputs, eager_maps,
                    ("backbone", "_orig_mod.backbone"))


# --- outputs that carry logits ---------------------------------------------------------


Output = namedtuple("Output", ["features", "logits"])


class Carrier(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)
        self.kind = kind

    def forward(self, x: Tensor) -> object:
        features = self.conv(x)
        logits = self.head(features.mean((2, 3)))
        if self.kind == "dict":
            return {"features": features, "logits": logits}
        if self.kind == "namedtuple":
            return Output(features, logits)
        return {"features": features, "scores": logits}


@pytest.mark.parametrize("kind", ["dict", "namedtuple"])
def test_outputs_carrying_logits_need_no_output_transform(kind):
    torch.manual_seed(0)
    model, x = Carrier(kind), torch.randn(2, 3, 16, 16)
    result = explain_batch(model, x, "conv")
    expected = compute_cam(model, x, "conv", output_transform=lambda out: out[1] if isinstance(
        out, tuple) else out["logits"])
    assert torch.equal(result.cams, expected)
    with torch.no_grad():
        assert torch.equal(result.logits, model.head(model.conv(x).mean((2, 3))))


def test_other_outputs_keep_the_clear_error():
    model = Carrier("other")
    with pytest.raises(TypeError, match=r"returned a dict.*output_transform=lambda out: "
                                        r"out\['features'\]"):
        compute_cam(model, torch.randn(2, 3, 16, 16), "conv")


# --- Lightning: GradCAMCallback() with no options on a ViT -----------------------------


def test_a_vit_trains_with_the_callback_and_no_options(tmp_path, caplog):
    from lightning.pytorch import Trainer, seed_everything
    from timm.models.vision_transformer import VisionTransformer

    from gradcam_callback import GradCAMCallback
    from tests.lit_helpers import LitTiny, StripeData

    class LitViT(LitTiny):
        def __init__(self) -> None:
            super().__init__()
            self.features = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2,
                                              num_heads=2, num_classes=3)
            self.head = nn.Identity()

    seed_everything(0)
    callback = GradCAMCallback()
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      limit_train_batches=2, callbacks=[callback], default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.fit(LitViT(), StripeData(n_train=32, n_val=8))
    assert callback.layer_name == "features.blocks.1.norm1"
    lines = [r.getMessage() for r in caplog.records if "GradCAMCallback: explaining" in
             r.getMessage()]
    assert lines == ["GradCAMCallback: explaining 'features.blocks.1.norm1' (chosen "
                     "automatically): tokens, 1 prefix + 4x4 grid"]
    maps = callback.history.maps
    assert maps is not None and maps.shape == (1, 8, 32, 32)
    assert bool((maps.flatten(2).amax(2) > 0).all())
    assert callback.last_grid is not None


# --- the full-size configurations ------------------------------------------------------


FULL = {
    "timm convnext_tiny": (_timm("convnext_tiny"), "stages", "channels-first, 2x2 grid"),
    "timm swin_tiny_patch4_window7_224": (
        _timm("swin_tiny_patch4_window7_224", img_size=64), "norm", "channels-last, 2x2 grid"),
    "torchvision swin_t": (lambda: torchvision.models.swin_t(num_classes=5), "norm",
                           "channels-last, 2x2 grid"),
    "torchvision vit_b_16": (lambda: _with_head(torchvision.models.vit_b_16(
        image_size=64, num_classes=5)), "encoder.layers.encoder_layer_11.ln_1",
        "tokens, 1 prefix + 4x4 grid"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FULL))
def test_full_width_models_choose_the_same(name):
    build, layer, reading = FULL[name]
    torch.manual_seed(0)
    model = build().eval()
    result = explain_batch(model, torch.randn(2, 3, 64, 64), None)
    assert (result.layer_name, result.reading) == (layer, reading)
    _check_maps(result.cams, (64, 64))
