"""The callback's options: validated in one place, into a few frozen groups.

:class:`~gradcam_callback.lightning.callback.GradCAMCallback` keeps its flat keyword
constructor (users and LightningCLI need it); :func:`validated_options` checks every
argument and sorts them into one :class:`CallbackOptions` of five groups, one per
collaborator: which samples and how to show them (:class:`SampleOptions`), how to
explain (:class:`ExplainOptions`), the pictures (:class:`PictureOptions`), the
many-sample statistics (:class:`StatisticsOptions`) and when to run and how to fail
(:class:`RunOptions`). The groups are frozen: a collaborator never sees an option
change under it; the callback replaces them all at once.

Every check uses :mod:`gradcam_callback._checks`: ``TypeError`` for a wrong type,
``ValueError`` for a bad value, and a message that names the argument, the value and
what is valid. Nothing here needs a model or data; what does is checked before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from gradcam_callback import _checks
from gradcam_callback.engine import get_method
from gradcam_callback.engine.targets import check_task
from gradcam_callback.engine.transforms import ReadingSpec, check_reading
from gradcam_callback.guard import ON_ERROR
from gradcam_callback.render import IMAGE_FORMATS, colormap_lut

if TYPE_CHECKING:
    from gradcam_callback.statistics.alarms import Alarm

__all__ = [
    "ALARM_ACTIONS",
    "TARGET_WORDS",
    "CallbackOptions",
    "ExplainOptions",
    "PictureOptions",
    "RunOptions",
    "SampleOptions",
    "StatisticsOptions",
    "check_target",
    "validated_options",
]

TARGET_WORDS = ("predicted", "label", "both")
ALARM_ACTIONS = ("warn", "stop")

Target = str | int | Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SampleOptions:
    """Which samples to show, how to read them, and how to name and show them."""

    num_samples: int = 8
    sample_indices: tuple[int, ...] | None = None
    dataloader_idx: int = 0
    input_key: str = "image"
    label_key: str = "label"
    batch_to_input: Callable[[Any], Any] | None = None
    mask_keys: tuple[str, ...] | None = None
    mask_fn: Callable[[Any], dict[str, Tensor]] | None = None
    class_names: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def wanted_indices(self) -> list[int]:
        """The dataset indices asked for, before checking the dataset's size."""
        if self.sample_indices is not None:
            return list(self.sample_indices)
        return list(range(self.num_samples))

    def identity(self) -> dict[str, Any]:
        """The options that choose the samples, as checkpointed."""
        return {"num_samples": self.num_samples, "dataloader_idx": self.dataloader_idx,
                "sample_indices": (None if self.sample_indices is None
                                   else list(self.sample_indices))}


@dataclass(frozen=True)
class ExplainOptions:
    """Which layer, which method, which score; how to read the layer and the output."""

    target_layer: str | None = None
    method: str = "gradcam"
    target: Target = "predicted"
    reshape_transform: ReadingSpec = "auto"
    output_transform: Callable[[Any], Tensor] | None = None
    batch_size: int = 32
    task: str = "auto"
    threshold: float = 0.5
    background: int | None = 0

    def identity(self) -> dict[str, str | int]:
        """What tells two callbacks apart in a checkpoint (Lightning's ``state_key``)."""
        target = self.target if isinstance(self.target, (str, int)) else "callable"
        identity: dict[str, str | int] = {"target_layer": self.target_layer or "auto",
                                          "method": self.method, "target": target}
        if self.task != "auto":  # (the keys of checkpoints written before tasks stay)
            identity["task"] = self.task
        if self.background != 0:  # another background explains other classes
            identity["background"] = "none" if self.background is None else self.background
        return identity


@dataclass(frozen=True)
class PictureOptions:
    """How the pictures look and where files go."""

    colormap: str = "jet"
    alpha: float = 0.5
    show_heatmap: bool = False
    max_image_size: int | None = 256
    filmstrip_max: int = 12
    save_gif: bool = False
    image_format: str = "jpeg"
    image_dir: str | None = None
    per_sample_images: bool = False
    samples_per_page: int = 16
    slice_axis: int | None = None
    signal_channels: tuple[int, ...] | None = None

    def check_kind(self, kind: str, shape: tuple[int, ...]) -> None:
        """Refuse an option that does not apply to the inputs (``kind``: ``"image"``,
        ``"signal"``, ``"volume"``) before training, naming it.

        Raises:
            ValueError: ``slice_axis`` without volumes, ``signal_channels`` without
                signals, or a channel the signals do not have.
        """
        if self.slice_axis is not None and kind != "volume":
            raise ValueError(f"slice_axis={self.slice_axis}: slices are cut from volumes "
                             f"(N, C, D, H, W), and the inputs are {kind}s {shape}; leave "
                             "slice_axis unset")
        if self.signal_channels is not None and kind != "signal":
            raise ValueError(f"signal_channels={list(self.signal_channels)}: lines are drawn "
                             f"for signals (N, C, T), and the inputs are {kind}s {shape}; "
                             "leave signal_channels unset")
        if self.signal_channels is not None:
            beyond = [c for c in self.signal_channels if c >= shape[1]]
            if beyond:
                raise ValueError(f"signal_channels={list(self.signal_channels)}: the signals "
                                 f"{shape} have {shape[1]} channel(s), so channel "
                                 f"{beyond[0]} is not one (valid: 0..{shape[1] - 1})")


@dataclass(frozen=True)
class StatisticsOptions:
    """The many-sample statistics and the alarms on them."""

    metric_samples: int = 256
    metric_batch_size: int = 64
    alarms: tuple[Alarm, ...] = ()
    alarm_action: str = "warn"
    faithfulness_samples: int = 24
    sanity_layers: int = 1


@dataclass(frozen=True)
class RunOptions:
    """When the callback runs, and what a failure of its own work does."""

    every_n_epochs: int = 1
    every_n_steps: int | None = None
    on_error: str = "warn"


@dataclass(frozen=True)
class CallbackOptions:
    """All options, validated: the five groups, and the arguments as given (normalised)."""

    samples: SampleOptions = field(default_factory=SampleOptions)
    explaining: ExplainOptions = field(default_factory=ExplainOptions)
    pictures: PictureOptions = field(default_factory=PictureOptions)
    statistics: StatisticsOptions = field(default_factory=StatisticsOptions)
    run: RunOptions = field(default_factory=RunOptions)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    """Constructor argument name -> its normalised value (what ``callback.<name>`` reads)."""


def validated_options(**options: Any) -> CallbackOptions:
    """The constructor's arguments, checked, normalised and grouped.

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
    from gradcam_callback.statistics.alarms import parse_alarms  # (statistics import options)

    alarms = o["alarms"]
    flat: dict[str, Any] = {
        "target_layer": target_layer,
        "num_samples": _checks.check_int("num_samples", o["num_samples"], minimum=1),
        "every_n_epochs": _checks.check_int("every_n_epochs", o["every_n_epochs"], minimum=1),
        "every_n_steps": _checks.check_int("every_n_steps", o["every_n_steps"], minimum=1,
                                           allow_none=True),
        "method": get_method(o["method"]).name,
        "target": check_target(o["target"]),
        "task": check_task(o["task"]),
        "threshold": _check_threshold(o["threshold"]),
        "background": _checks.check_int("background", o["background"], minimum=0,
                                        allow_none=True),
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
        "image_dir": None if image_dir is None else str(image_dir),
        "per_sample_images": _checks.check_bool("per_sample_images", o["per_sample_images"]),
        "batch_size": _checks.check_int("batch_size", o["batch_size"], minimum=1),
        "samples_per_page": _checks.check_int("samples_per_page", o["samples_per_page"],
                                              minimum=1),
        "on_error": _checks.check_choice("on_error", o["on_error"], ON_ERROR),
        "metric_samples": _checks.check_int("metric_samples", o["metric_samples"], minimum=0),
        "metric_batch_size": _checks.check_int("metric_batch_size", o["metric_batch_size"],
                                               minimum=1),
        "alarms": dict(alarms) if alarms else {},
        "alarm_action": _checks.check_choice("alarm_action", o["alarm_action"], ALARM_ACTIONS),
        "faithfulness_samples": _checks.check_int("faithfulness_samples",
                                                  o["faithfulness_samples"], minimum=0),
        "sanity_layers": _checks.check_int("sanity_layers", o["sanity_layers"], minimum=0),
        "slice_axis": _check_slice_axis(o["slice_axis"]),
        "signal_channels": _check_channels(o["signal_channels"]),
    }
    names = flat["class_names"]
    if flat["task"] == "binary" and names is not None and len(names) != 2:
        raise ValueError(f"class_names={list(names)!r} with task='binary': a binary model has "
                         "two sides, so two names: negative, then positive")
    if flat["task"] == "regression" and flat["target"] in ("label", "both"):
        raise ValueError(f"target={flat['target']!r} with task='regression': a regression "
                         "output has no label side to explain; use 'predicted' or an output "
                         "index k")
    unknown = set(o) - set(flat)
    if unknown:  # a programming error: the constructor and this function disagree
        raise TypeError(f"unknown options: {sorted(unknown)}")
    return CallbackOptions(
        samples=SampleOptions(
            num_samples=flat["num_samples"], sample_indices=_tuple(flat["sample_indices"]),
            dataloader_idx=flat["dataloader_idx"], input_key=flat["input_key"],
            label_key=flat["label_key"], batch_to_input=flat["batch_to_input"],
            mask_keys=_tuple(flat["mask_keys"]), mask_fn=flat["mask_fn"],
            class_names=_tuple(flat["class_names"]), mean=_tuple(flat["mean"]),
            std=_tuple(flat["std"])),
        explaining=ExplainOptions(
            target_layer=target_layer, method=flat["method"], target=flat["target"],
            reshape_transform=flat["reshape_transform"],
            output_transform=flat["output_transform"], batch_size=flat["batch_size"],
            task=flat["task"], threshold=flat["threshold"], background=flat["background"]),
        pictures=PictureOptions(
            colormap=flat["colormap"], alpha=flat["alpha"], show_heatmap=flat["show_heatmap"],
            max_image_size=flat["max_image_size"], filmstrip_max=flat["filmstrip_max"],
            save_gif=flat["save_gif"], image_format=flat["image_format"],
            image_dir=flat["image_dir"], per_sample_images=flat["per_sample_images"],
            samples_per_page=flat["samples_per_page"], slice_axis=flat["slice_axis"],
            signal_channels=_tuple(flat["signal_channels"])),
        statistics=StatisticsOptions(
            metric_samples=flat["metric_samples"], metric_batch_size=flat["metric_batch_size"],
            alarms=tuple(parse_alarms(alarms)), alarm_action=flat["alarm_action"],
            faithfulness_samples=flat["faithfulness_samples"],
            sanity_layers=flat["sanity_layers"]),
        run=RunOptions(every_n_epochs=flat["every_n_epochs"],
                       every_n_steps=flat["every_n_steps"], on_error=flat["on_error"]),
        arguments=flat,
    )


def check_target(target: object) -> Target:
    """``target``: one of :data:`TARGET_WORDS`, a class index >= 0, or a callable."""
    if callable(target) and not isinstance(target, str):
        return target
    if isinstance(target, str):
        return _checks.check_choice("target", target, TARGET_WORDS)
    if _checks.is_number(target):
        number = float(target)  # type: ignore[arg-type]
        if math.isfinite(number) and number == int(number) and number >= 0:
            return int(number)
    kind = TypeError if not _checks.is_number(target) else ValueError
    raise kind(
        f"target={target!r}: valid targets are 'predicted', 'label', 'both', a class index "
        ">= 0, or a callable logits -> (N,) scores"
    )


def _check_threshold(value: object) -> float:
    """``threshold``: a number strictly between 0 and 1."""
    number = _checks.check_float("threshold", value)
    assert number is not None
    if not 0.0 < number < 1.0:
        raise ValueError(f"threshold={number!r}: a multi-label threshold must be strictly "
                         "between 0 and 1 (e.g. 0.5)")
    return number


SLICE_AXES = {0: "depth", 1: "height", 2: "width"}
"""A volume's spatial axes, as ``slice_axis`` names them."""


def _check_slice_axis(value: object) -> int | None:
    """``slice_axis``: ``None`` (depth) or a spatial axis of a volume, 0, 1 or 2."""
    axis = _checks.check_int("slice_axis", value, allow_none=True)
    if axis is not None and axis not in SLICE_AXES:
        raise ValueError(f"slice_axis={axis}: outside the volume; a volume (N, C, D, H, W) "
                         "has spatial axes 0 (depth), 1 (height) and 2 (width)")
    return axis


def _check_channels(value: object) -> list[int] | None:
    """``signal_channels``: ``None``, a channel index, or a non-empty list of them."""
    if value is None:
        return None
    if _checks.is_number(value) and not isinstance(value, bool):
        value = [value]
    channels = _checks.check_int_sequence("signal_channels", value)
    return None if channels is None else list(channels)


def _tuple(values: Any) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values)
