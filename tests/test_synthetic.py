"""ShortcutShapes: deterministic, masks that match the pictures, a shortcut on demand."""

from __future__ import annotations

import pytest
import torch

from gradcam_callback.synthetic import SHAPE_NAMES, ShortcutShapes


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = ShortcutShapes(8, seed=3), ShortcutShapes(8, seed=3), ShortcutShapes(8, seed=4)
    for i in range(8):
        assert torch.equal(a[i]["image"], b[i]["image"])
    assert not all(torch.equal(a[i]["image"], c[i]["image"]) for i in range(8))
    assert torch.equal(a[5]["image"], a[5]["image"])  # random access is stable


def test_items_and_masks():
    data = ShortcutShapes(30, image_size=48, num_classes=4)
    labels = set()
    for i in range(len(data)):
        item = data[i]
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
        assert item["image"].min() >= 0 and item["image"].max() <= 1
        obj, patch = item["object_mask"], item["shortcut_mask"]
        assert obj.dtype == torch.bool and obj.any() and not (obj & patch).any()
        assert patch[0, 0] and patch.sum() == 12 * 12
        labels.add(int(item["label"]))
    assert labels == {0, 1, 2, 3}
    assert data.class_names == list(SHAPE_NAMES[:4])


def patch_colour(item):
    return item["image"][:, 0, 0]


def test_shortcut_probability_controls_whether_the_patch_tells_the_class():
    honest = ShortcutShapes(200, image_size=32, shortcut_prob=1.0, seed=1)
    colour_of = {}
    for i in range(len(honest)):
        label = int(honest[i]["label"])
        colour = tuple(patch_colour(honest[i]).tolist())
        assert colour_of.setdefault(label, colour) == colour  # one colour per class
    random_patch = ShortcutShapes(200, image_size=32, shortcut_prob=0.0, seed=1)
    agree = sum(
        tuple(patch_colour(random_patch[i]).tolist()) == colour_of[int(random_patch[i]["label"])]
        for i in range(len(random_patch))
    )
    assert 40 < agree < 100  # about 1 in 3 by chance, not always


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n": 0}, "n must be an int >= 1, got 0"),
        ({"n": 4, "image_size": 8}, "image_size must be an int >= 16, got 8"),
        ({"n": 4, "num_classes": 7}, r"num_classes must be 2..6 \(square, disc"),
        ({"n": 4, "shortcut_prob": 1.5}, r"shortcut_prob must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ShortcutShapes(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError, match="index 4 out of range for 4 samples"):
        ShortcutShapes(4)[4]
