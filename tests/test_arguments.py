"""Every constructor argument: a wrong type is a TypeError, a bad value a ValueError, both
naming the argument, the value and what is valid; numpy scalars, tuples and 1-D arrays are
accepted; bools are not numbers; strings are not sequences or callables; NaN and inf are
never valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_callback import GradCAMCallback, compute_cam

NAN, INF = float("nan"), float("inf")

REJECTED = [
    # (arguments, error, pattern)
    ({"colormap": None}, TypeError, r"colormap=None: must be a string"),
    ({"colormap": "jett"}, ValueError, r"colormap='jett': not a matplotlib colormap.*'jet'"),
    ({"sample_indices": 5}, TypeError, r"sample_indices=5: must be a list of ints, got int"),
    ({"sample_indices": "0,1"}, TypeError, r"sample_indices='0,1': must be a list of ints"),
    ({"sample_indices": [1, 1]}, ValueError, r"sample_indices=\[1, 1\]: 1 appears more than"),
    ({"sample_indices": [0, -1]}, ValueError, r"sample_indices=\[0, -1\]: every item must be >="),
    ({"sample_indices": [0, 1.0]}, TypeError, r"sample_indices=\[0, 1.0\]: every item must be"),
    ({"sample_indices": [True]}, TypeError, r"sample_indices=\[True\]: every item must be an int"),
    ({"sample_indices": np.zeros((2, 2), int)}, TypeError, r"sample_indices=array.*list of"),
    ({"sample_indices": []}, ValueError, r"sample_indices=\[\]: give at least one index"),
    ({"mean": [NAN], "std": [1.0]}, ValueError, r"mean=nan: must be a finite number"),
    ({"mean": [0.5], "std": [INF]}, ValueError, r"std=inf: must be a finite number"),
    ({"mean": 0.5, "std": 0.0}, ValueError, r"std=\[0.0\]: every value must be > 0"),
    ({"mean": [0.5, 0.5], "std": [0.2] * 3}, ValueError, r"need the same number of values"),
    ({"mean": [0.5]}, ValueError, r"pass both .* or neither"),
    ({"mean": "0.5", "std": 0.2}, TypeError, r"mean='0.5': must be a number or a list"),
    ({"mean": [True], "std": [0.2]}, TypeError, r"mean=True: must be a finite number"),
    ({"alpha": True}, TypeError, r"alpha=True: must be a finite number .*got bool"),
    ({"alpha": NAN}, ValueError, r"alpha=nan: must be a finite number"),
    ({"alpha": 2}, ValueError, r"alpha=2.0: must be a finite number >= 0.0 and <= 1.0"),
    ({"dataloader_idx": True}, TypeError, r"dataloader_idx=True: must be an int >= 0, got bool"),
    ({"dataloader_idx": -1}, ValueError, r"dataloader_idx=-1: must be an int >= 0"),
    ({"num_samples": True}, TypeError, r"num_samples=True: must be an int >= 1, got bool"),
    ({"num_samples": 2.0}, TypeError, r"num_samples=2.0: must be an int >= 1, got float"),
    ({"num_samples": 0}, ValueError, r"num_samples=0: must be an int >= 1"),
    ({"every_n_epochs": False}, TypeError, r"every_n_epochs=False: must be an int"),
    ({"max_image_size": 4}, ValueError, r"max_image_size=4: must be an int >= 16 or None"),
    ({"max_image_size": True}, TypeError, r"max_image_size=True: must be an int"),
    ({"filmstrip_max": 1}, ValueError, r"filmstrip_max=1: must be an int >= 2"),
    ({"batch_size": 0}, ValueError, r"batch_size=0: must be an int >= 1"),
    ({"batch_size": True}, TypeError, r"batch_size=True: must be an int >= 1, got bool"),
    ({"samples_per_page": 0}, ValueError, r"samples_per_page=0: must be an int >= 1"),
    ({"on_error": "ignore"}, ValueError, r"on_error='ignore': valid values are 'warn', 'raise'"),
    ({"on_error": False}, TypeError, r"on_error=False: must be one of 'warn', 'raise'"),
    ({"class_names": "abc"}, TypeError, r"class_names='abc': must be a list of strings.*\['abc'\]"),
    ({"class_names": ["a", 1]}, TypeError, r"class_names=\['a', 1\]: every item must be a str"),
    ({"mask_keys": "obj_mask"}, TypeError,
     r"mask_keys='obj_mask': must be a list of strings, got str \(did you mean \['obj_mask'\]"),
    ({"output_transform": 3}, TypeError, r"output_transform=3: must be a callable or None"),
    ({"output_transform": "out[0]"}, TypeError, r"output_transform='out\[0\]': must be a call"),
    ({"batch_to_input": "x"}, TypeError, r"batch_to_input='x': must be a callable or None"),
    ({"mask_fn": 1}, TypeError, r"mask_fn=1: must be a callable or None"),
    ({"show_heatmap": "no"}, TypeError, r"show_heatmap='no': must be True or False, got str"),
    ({"show_heatmap": 0}, TypeError, r"show_heatmap=0: must be True or False, got int"),
    ({"save_gif": None}, TypeError, r"save_gif=None: must be True or False"),
    ({"target": "labels"}, ValueError, r"target='labels': valid values .* Did you mean 'label'"),
    ({"target": -1}, ValueError, r"target=-1: valid targets are 'predicted', 'label', 'both', a"),
    ({"target": 2.5}, ValueError, r"target=2.5: valid targets"),
    ({"target": NAN}, ValueError, r"target=nan: valid targets"),
    ({"target": INF}, ValueError, r"target=inf: valid targets"),
    ({"target": True}, TypeError, r"target=True: valid targets"),
    ({"target": [1, 2]}, TypeError, r"target=\[1, 2\]: valid targets"),
    ({"method": "gradcan"}, ValueError, r"method='gradcan': valid values .* 'gradcam'"),
    ({"method": ["gradcam"]}, TypeError, r"method=\['gradcam'\]: must be one of 'gradcam'"),
    ({"image_format": "gif"}, ValueError, r"image_format='gif': valid values are 'png', 'jpeg'"),
    ({"image_dir": 3}, TypeError, r"image_dir=3: must be a directory path"),
    ({"input_key": ""}, ValueError, r"input_key='': must be a non-empty string"),
    ({"label_key": 1}, TypeError, r"label_key=1: must be a string"),
    ({"reshape_transform": "swin"}, ValueError,
     r"reshape_transform='swin': valid readings are 'auto'"),
    ({"target_layer": 3}, TypeError, r"target_layer=3: pass the layer's dotted name"),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), REJECTED,
                         ids=[", ".join(f"{k}={v!r}" for k, v in case[0].items())
                              for case in REJECTED])
def test_a_bad_argument_names_itself_its_value_and_what_is_valid(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        GradCAMCallback(**{"target_layer": "features", **kwargs})


def test_numpy_scalars_tuples_and_arrays_are_accepted_as_plain_values():
    callback = GradCAMCallback(
        "features", num_samples=np.int64(4), every_n_epochs=np.int32(2),
        sample_indices=np.array([3, 1]), mean=0.5, std=np.float32(0.25),
        alpha=np.float64(0.25), class_names=("a", "b", "c"), mask_keys=("object_mask",),
        batch_size=np.int16(8), target=np.int64(2), dataloader_idx=np.uint8(0))
    assert callback.num_samples == 4 and type(callback.num_samples) is int
    assert callback.every_n_epochs == 2 and callback.batch_size == 8
    assert callback.sample_indices == [3, 1]
    assert all(type(i) is int for i in callback.sample_indices)
    assert callback.mean == [0.5] and callback.std == [0.25]
    assert callback.alpha == 0.25 and type(callback.alpha) is float
    assert callback.class_names == ["a", "b", "c"] and callback.target == 2
    as_tensor = GradCAMCallback("features", sample_indices=torch.tensor([5, 0]),
                                mean=(0.1, 0.2, 0.3), std=np.array([0.5, 0.5, 0.5]))
    assert as_tensor.sample_indices == [5, 0] and as_tensor.std == [0.5, 0.5, 0.5]
    assert GradCAMCallback("features", target=2.0).target == 2


def test_defaults_and_yaml_friendly_values_are_accepted():
    callback = GradCAMCallback()
    assert (callback.batch_size, callback.samples_per_page, callback.on_error) == (32, 16, "warn")
    assert GradCAMCallback(on_error="raise", reshape_transform="vit").on_error == "raise"


def test_compute_cam_with_a_list_for_method_says_what_is_valid():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(TypeError, match=r"method=\['gradcam'\]: must be one of 'gradcam', "
                       r"'gradcam\+\+'.*got list"):
        compute_cam(model, torch.randn(1, 3, 8, 8), "0", method=["gradcam"])
    with pytest.raises(ValueError, match=r"batch_size=0: must be an int >= 1"):
        compute_cam(model, torch.randn(1, 3, 8, 8), "0", batch_size=0)


def test_messages_stay_on_one_line_for_arrays():
    with pytest.raises(TypeError) as raised:
        GradCAMCallback("features", sample_indices=np.zeros((3, 3), int))
    assert "\n" not in str(raised.value)
