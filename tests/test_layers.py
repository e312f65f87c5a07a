"""Choosing the target layer: by module, by name, automatically, and the errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from gradcam_callback import (
    compute_cam,
    explain_batch,
    find_last_spatial_layer,
    vit_reshape_transform,
)
from gradcam_callback.engine.transforms import LayoutHints, grid_fits, token_layouts


def test_module_and_dotted_name_give_the_same_map(tiny_cnn, images):
    by_name = compute_cam(tiny_cnn, images, "features.4")
    by_module = compute_cam(tiny_cnn, images, tiny_cnn.features[4])
    assert torch.equal(by_name, by_module)


def test_unknown_name_lists_the_three_closest_real_names(resnet18, images):
    with pytest.raises(ValueError) as info:
        compute_cam(resnet18, images, "layer5")
    assert "target_layer 'layer5' is not a module of ResNet" in str(info.value)
    assert "Closest names: 'layer4', 'layer3', 'layer2'." in str(info.value)


def test_unknown_name_suggests_the_intended_layer(resnet18, images):
    with pytest.raises(ValueError, match=r"'layer4\.1\.conv2'"):
        compute_cam(resnet18, images, "layer4.1.con2")


def test_a_module_of_another_model_is_refused(tiny_cnn, images):
    stranger = nn.Conv2d(3, 8, 3)
    with pytest.raises(ValueError, match="not a submodule of TinyCNN"):
        compute_cam(tiny_cnn, images, stranger)


def test_a_layer_of_the_wrong_type_is_refused(tiny_cnn, images):
    with pytest.raises(TypeError, match=r"target_layer must be an nn\.Module.*got int"):
        compute_cam(tiny_cnn, images, 3)


def test_auto_detect_picks_the_last_spatial_layer(resnet18, tiny_cnn, images):
    larger = torch.randn(2, 3, 64, 64)
    assert find_last_spatial_layer(resnet18, larger) == "layer4"  # 2x2
    assert find_last_spatial_layer(resnet18, images) == "layer3"  # layer4 is 1x1 at 32x32
    assert find_last_spatial_layer(tiny_cnn, images) == "features"
    auto = compute_cam(resnet18, larger, None)
    assert torch.equal(auto, compute_cam(resnet18, larger, "layer4"))


def test_auto_detect_without_any_spatial_layer_says_what_to_do(images):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(ValueError, match=r"found no layer whose output reads as maps.*"
                                         r"0: \(3, 3072\), 1: \(3, 4\).*reshape_transform="):
        compute_cam(mlp, images, None)


class Tokens(nn.Module):
    """A patch embedding (8x8 patches) and a token block: no class token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)
        self.block = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 8)
        return self.head(self.block(tokens).mean(1))


def test_token_outputs_are_read_without_a_transform(images):
    model = Tokens()
    auto = explain_batch(model, images, "block")
    assert auto.reading == "tokens, 4x4 grid"
    explicit = compute_cam(model, images, "block",
                           reshape_transform=vit_reshape_transform(num_prefix_tokens=0))
    assert auto.cams.shape == (3, 32, 32)
    torch.testing.assert_close(auto.cams, explicit, rtol=0, atol=0)
    for name in ("tokens", "vit", "tokens:0"):
        assert torch.equal(compute_cam(model, images, "block", reshape_transform=name), explicit)


def test_a_layer_the_forward_never_calls_is_reported(tiny_cnn, images):
    tiny_cnn.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match=r"'unused' was not called during the forward pass"):
        compute_cam(tiny_cnn, images, "unused")


def test_a_layer_returning_a_tuple_is_reported(images):
    class TupleLayer(nn.Module):
        def forward(self, x):
            return x, x

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = TupleLayer()
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.pair(x)[0].mean((2, 3)))

    with pytest.raises(TypeError, match="'pair' returned a tuple, not a tensor"):
        compute_cam(Model(), images, "pair")


def test_a_layer_called_twice_is_explained_at_its_last_call(images):
    class SharedBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.block = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.block(torch.relu(self.block(self.stem(x))))
            return self.head(x.mean((2, 3)))

    torch.manual_seed(0)
    model = SharedBlock()
    second_input = torch.relu(model.block(model.stem(images))).detach()
    acts = model.block(second_input).detach().requires_grad_()
    score = model.head(acts.mean((2, 3)))[:, 1].sum()
    (grads,) = torch.autograd.grad(score, acts)
    expected = (grads.mean((2, 3), keepdim=True) * acts).sum(1).clamp(min=0).detach()
    ours = compute_cam(model, images, "block", 1, output_size=None, normalize=False)
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize(
    ("tokens", "kwargs", "shape"),
    [
        ((2, 1 + 16, 5), {}, (2, 5, 4, 4)),
        ((2, 16, 5), {"num_prefix_tokens": 0}, (2, 5, 4, 4)),
        ((2, 2 + 12, 5), {"num_prefix_tokens": 2, "grid": (3, 4)}, (2, 5, 3, 4)),
    ],
)
def test_vit_reshape_transform_lays_tokens_out_row_by_row(tokens, kwargs, shape):
    data = torch.randn(tokens)
    spatial = vit_reshape_transform(**kwargs)(data)
    assert spatial.shape == shape
    prefix = kwargs.get("num_prefix_tokens", 1)
    width = shape[3]
    assert torch.equal(spatial[:, :, 1, 0], data[:, prefix + width, :])  # row 1, column 0


def test_vit_reshape_transform_errors_name_the_counts():
    with pytest.raises(ValueError, match=r"15 patch tokens.*not form a square grid"):
        vit_reshape_transform()(torch.zeros(1, 16, 4))
    with pytest.raises(ValueError, match=r"grid=\(3, 3\) needs 9 patch tokens, got 16"):
        vit_reshape_transform(grid=(3, 3))(torch.zeros(1, 17, 4))
    with pytest.raises(ValueError, match="num_prefix_tokens must be an int >= 0, got -1"):
        vit_reshape_transform(num_prefix_tokens=-1)


# --- readings: how a layer's output becomes (N, C, h, w) maps --------------------------


@pytest.mark.parametrize(
    ("count", "size", "layouts"),
    [
        (197, (224, 224), [(1, (14, 14))]),  # class token
        (198, (224, 224), [(2, (14, 14))]),  # class + distillation tokens
        (201, (224, 224), [(5, (14, 14))]),  # class + 4 registers
        (196, (224, 224), [(0, (14, 14))]),  # no prefix (global average pooling)
        (141, (224, 160), [(1, (14, 10))]),  # non-square input: h from H, w from W
        (17, (64, 64), [(1, (4, 4)), (8, (3, 3))]),  # small grids: more than one fits
        (25, (64, 96), [(1, (4, 6)), (5, (4, 5)), (10, (3, 5))]),
    ],
)
def test_token_layouts_follow_from_the_input_size(count, size, layouts):
    assert token_layouts(count, size) == layouts


def test_the_models_own_grids_and_prefix_count_decide_between_token_layouts():
    hints = LayoutHints(grids=frozenset({(4, 6)}))
    assert hints.narrow(token_layouts(25, (64, 96))) == [(1, (4, 6))]
    # a later, downsampled stage keeps the prefix count of the tokens after the embedding
    hints = LayoutHints(grids=frozenset({(14, 14)}), prefixes=frozenset({0}))
    assert hints.narrow(token_layouts(16, (224, 224))) == [(0, (4, 4))]  # not 7 + 3x3


def test_grid_fits_needs_one_stride_for_both_sides():
    assert grid_fits((7, 7), (224, 224)) and grid_fits((4, 6), (64, 96))
    assert grid_fits((8, 8), (299, 299))  # valid convolutions: some integer stride
    assert not grid_fits((6, 4), (64, 96))  # transposed
    assert not grid_fits((197, 197), (224, 224))  # no stride gives 197 from 224
    assert not grid_fits((7, 768), (224, 224))  # larger than the input


class ChannelsLast(nn.Module):
    """Conv stem, then a channels-last stage with a LayerNorm over C (Swin-style)."""

    def __init__(self, channels: int = 12) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 4, stride=4)
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, 5)

    def forward(self, x):
        x = self.norm(self.stem(x).permute(0, 2, 3, 1))  # (N, h, w, C)
        return self.head(x.mean((1, 2)))


def test_channels_last_outputs_are_read_as_channels_last():
    torch.manual_seed(0)
    model, x = ChannelsLast(), torch.randn(2, 3, 32, 48)
    auto = explain_batch(model, x, None)
    assert (auto.layer_name, auto.reading) == ("norm", "channels-last, 8x12 grid")
    named = compute_cam(model, x, "norm", reshape_transform="nhwc")
    by_hand = compute_cam(model, x, "norm", reshape_transform=lambda t: t.permute(0, 3, 1, 2))
    assert torch.equal(auto.cams, named) and torch.equal(named, by_hand)
    assert not torch.equal(named, compute_cam(model, x, "norm", reshape_transform="nchw"))


class Cube(nn.Module):
    """A layer with an (N, 8, 8, 8) output and nothing that tells its layout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.scale = ScaleBy2()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.scale(self.stem(x)).mean((2, 3)))


class ScaleBy2(nn.Module):
    def forward(self, x):
        return x * 2


def test_an_ambiguous_layout_names_both_readings_and_how_to_choose():
    model, x = Cube(), torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 8\), which reads more than one way: "
                                         r"'nchw' reads it as channels-first, 8x8 grid; 'nhwc' "
                                         r"reads it as channels-last, 8x8 grid\. Choose with "
                                         r"reshape_transform="):
        compute_cam(model, x, "scale")
    assert explain_batch(model, x, "scale", reshape_transform="nchw").reading == (
        "channels-first, 8x8 grid")
    # the Conv2d itself says channels-first: no question there
    assert explain_batch(model, x, "stem").reading == "channels-first, 8x8 grid"


def test_attention_internals_and_input_independent_tensors_are_refused():
    class Internals(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 8, stride=8)
            self.probs = nn.Softmax(dim=-1)
            self.heads = nn.Identity()
            self.bias = BiasTable()
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 8)
            per_head = self.heads(tokens.view(len(x), 16, 2, 4).transpose(1, 2))  # (N, 2, 16, 4)
            attn = self.probs(per_head @ per_head.transpose(-1, -2) + self.bias())
            mixed = (attn @ per_head).transpose(1, 2).reshape(len(x), 16, 8)
            return self.head(mixed.mean(1))

    model, x = Internals(), torch.randn(3, 3, 32, 32)
    with pytest.raises(ValueError, match=r"'probs' outputs attention probabilities"):
        compute_cam(model, x, "probs")
    with pytest.raises(ValueError, match=r"'heads' outputs shape \(3, 2, 16, 4\), which is not a "
                                         r"grid of maps.*per-head attention tensor"):
        compute_cam(model, x, "heads")
    with pytest.raises(ValueError, match=r"'bias' outputs shape \(1, 2, 16, 16\), whose first "
                                         r"dimension is not the batch \(3 inputs\)"):
        compute_cam(model, x, "bias")
    assert find_last_spatial_layer(model, x) == "embed"  # none of them is chosen


class BiasTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(1, 2, 16, 16))

    def forward(self):
        return self.table


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        ("swin", ValueError, r"reshape_transform='swin': valid readings are 'auto', 'nchw', "
                             r"'nhwc', 'tokens'"),
        ("token", ValueError, r"Did you mean 'tokens'\?"),
        (3, TypeError, r"reshape_transform=3: must be a reading name"),
    ],
)
def test_unknown_readings_are_refused_with_the_valid_ones(tiny_cnn, images, value, error,
                                                          pattern):
    with pytest.raises(error, match=pattern):
        compute_cam(tiny_cnn, images, "features", reshape_transform=value)


def test_a_reading_of_the_wrong_rank_says_so(tiny_cnn, images):
    with pytest.raises(ValueError, match=r"reshape_transform='tokens' reads \(N, prefix \+ h\*w, "
                                         r"C\), but layer 'features' outputs shape \(3, 16, 16, "):
        compute_cam(tiny_cnn, images, "features", reshape_transform="tokens")
    explained = explain_batch(tiny_cnn, images, "features", reshape_transform=None)
    assert explained.reading == "channels-first, 16x16 grid"  # None is "auto"; BatchNorm2d tells


def test_a_class_token_vit_is_explained_at_the_last_pre_attention_norm():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=16, mlp_dim=32,
                                               num_classes=3).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.1)  # torchvision starts it at zero
    x = torch.randn(2, 3, 32, 32)
    # later layers (encoder.ln, the last MLP) pass only the class token's gradient on:
    # their patch maps would be all zero
    late = compute_cam(vit, x, "encoder.ln", normalize=False)
    assert late.abs().max() == 0
    auto = explain_batch(vit, x, None)
    assert auto.layer_name == "encoder.layers.encoder_layer_1.ln_1"
    assert auto.reading == "tokens, 1 prefix + 4x4 grid"
    assert bool((auto.cams.flatten(1).amax(1) > 0).all())
