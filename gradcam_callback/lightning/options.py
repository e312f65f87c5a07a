"""The callback's constructor options, validated in one place.

Every check uses :mod:`gradcam_callback._checks`: ``TypeError`` for a wrong type,
``ValueError`` for a bad value, and a message that names the argument, the value and what
is valid. Nothing here needs a model or data; what does is checked before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from gradcam_callback import _checks
from gradcam_callback.engine import get_method
from gradcam_callback.engine.transforms import check_reading
from gradcam_callback.lightning.guard import ON_ERROR
from gradcam_callback.lightning.statistics import parse_alarms
from gradcam_callback.render import IMAGE_FORMATS, colormap_lut

__all__ = ["ALARM_ACTIONS", "TARGET_WORDS", "validated_options"]

TARGET_WORDS = ("predicted", "label", "both")
ALARM_ACTIONS = ("warn", "stop")


def validated_options(**options: Any) -> dict[str, Any]:
    """The constructor's arguments, checked and normalised (attribute name -> value).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of its valid range.
    """
    o = options
    target_layer = o["target_layer"]
    if target_layer is not None and not isinstance(target_layer, str):
        raise TypeError(
            f"target_layer={target_layer!r}: pass the layer's dotted name as "
            "model.named_modules() spells it (e.g. 'backbone.layer4'), or None"
        )
    normalisation = _checks.check_mean_std(o["mean"], o["std"])
    colormap_lut(_checks.check_str("colormap", o["colormap"]))  # with the closest names
    image_dir = o["image_dir"]
    if image_dir is not None and not isinstance(image_dir, (str, Path)):
        raise TypeError(f"image_dir={image_dir!r}: must be a directory path (str) or None")
    alarms = o["alarms"]
    return {
        "target_layer": target_layer,
        "num_samples": _checks.check_int("num_samples", o["num_samples"], minimum=1),
        "every_n_epochs": _checks.check_int("every_n_epochs", o["every_n_epochs"], minimum=1),
        "method": get_method(o["method"]).name,
        "target": check_target(o["target"]),
        "sample_indices": _checks.check_int_sequence("sample_indices", o["sample_indices"]),
        "dataloader_idx": _checks.check_int("dataloader_idx", o["dataloader_idx"], minimum=0),
        "input_key": _checks.check_str("input_key", o["input_key"]),
        "label_key": _checks.check_str("label_key", o["label_key"]),
        "batch_to_input": _checks.check_callable("batch_to_input", o["batch_to_input"]),
        "class_names": _checks.check_str_sequence("class_names", o["class_names"]),
        "mean": normalisation[0] if normalisation else None,
        "std": normalisation[1] if normalisation else None,
        "colormap": o["colormap"],
        "alpha": _checks.check_float("alpha", o["alpha"], minimum=0.0, maximum=1.0),
        "show_heatmap": _checks.check_bool("show_heatmap", o["show_heatmap"]),
        "max_image_size": _checks.check_int("max_image_size", o["max_image_size"], minimum=16,
                                            allow_none=True),
        "reshape_transform": check_reading(o["reshape_transform"]),
        "output_transform": _checks.check_callable("output_transform", o["output_transform"]),
        "mask_keys": _checks.check_str_sequence("mask_keys", o["mask_keys"]),
        "mask_fn": _checks.check_callable("mask_fn", o["mask_fn"]),
        "filmstrip_max": _checks.check_int("filmstrip_max", o["filmstrip_max"], minimum=2),
        "save_gif": _checks.check_bool("save_gif", o["save_gif"]),
        "image_format": _checks.check_choice("image_format", o["image_format"], IMAGE_FORMATS),
        "image_dir": image_dir,
        "per_sample_images": _checks.check_bool("per_sample_images", o["per_sample_images"]),
        "batch_size": _checks.check_int("batch_size", o["batch_size"], minimum=1),
        "samples_per_page": _checks.check_int("samples_per_page", o["samples_per_page"],
                                              minimum=1),
        "on_error": _checks.check_choice("on_error", o["on_error"], ON_ERROR),
        "metric_samples": _checks.check_int("metric_samples", o["metric_samples"], minimum=0),
        "metric_batch_size": _checks.check_int("metric_batch_size", o["metric_batch_size"],
                                               minimum=1),
        "_alarms": parse_alarms(alarms),
        "alarms": dict(alarms) if alarms else {},
        "alarm_action": _checks.check_choice("alarm_action", o["alarm_action"], ALARM_ACTIONS),
    }


def check_target(target: object) -> str | int | Callable[[Tensor], Tensor]:
    """``target``: one of :data:`TARGET_WORDS`, a class index >= 0, or a callable."""
    if callable(target) and not isinstance(target, str):
        return target  # type: ignore[return-value]
    if isinstance(target, str):
        return _checks.check_choice("target", target, TARGET_WORDS)
    if (_checks.is_number(target) and math.isfinite(target)  # type: ignore[arg-type]
            and float(target) == int(target) and int(target) >= 0):  # type: ignore[arg-type]
        return int(target)  # type: ignore[arg-type]
    kind = TypeError if not _checks.is_number(target) else ValueError
    raise kind(
        f"target={target!r}: valid targets are 'predicted', 'label', 'both', a class index "
        ">= 0, or a callable logits -> (N,) scores"
    )
