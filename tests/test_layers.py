"""Choosing the target layer: by module, by name, automatically, and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_callback import compute_cam, find_last_spatial_layer, vit_reshape_transform


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
    with pytest.raises(ValueError, match=r"no layer with a spatial.*vit_reshape_transform"):
        compute_cam(mlp, images, None)


def test_token_output_without_reshape_transform_points_to_it(images):
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 8, stride=8)
            self.block = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, 16, 8)
            return self.head(self.block(tokens).mean(1))

    model = Tokens()
    with pytest.raises(ValueError, match=r"outputs shape \(3, 16, 8\).*vit_reshape_transform"):
        compute_cam(model, images, "block")
    maps = compute_cam(model, images, "block",
                       reshape_transform=vit_reshape_transform(num_prefix_tokens=0))
    assert maps.shape == (3, 32, 32)


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
