"""The callback's state: the fixed samples of each stage, and the checkpoint.

A part of :class:`~gradcam_callback.lightning.callback.GradCAMCallback`, split out by
concern; reading samples lives in :mod:`.samples`, the maps of every run in :mod:`.history`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from gradcam_callback.lightning.display import Display
from gradcam_callback.lightning.guard import MAX_CONSECUTIVE_FAILURES, Attempt, RunGuard
from gradcam_callback.lightning.history import STATE_VERSION, History
from gradcam_callback.lightning.samples import FixedSamples, current_dataloaders
from gradcam_callback.lightning.sinks import ImageSink
from gradcam_callback.lightning.statistics import StatisticsResult


class StateMixin:
    """The fixed samples of each stage, and the checkpointed state."""

    @property
    def samples(self) -> FixedSamples | None:
        """The fixed validation samples (``indices``, ``inputs``, ``labels``, ``masks``),
        or ``None`` before the first run."""
        return self._samples.get("validate")

    @property
    def history(self) -> History:
        """The maps of every logged validation run (``epochs``, ``steps``, ``maps``)."""
        return self._history

    @property
    def layer_name(self) -> str | None:
        """The layer explained: ``target_layer``, or the one chosen automatically."""
        return self._layer_name

    def _init_run_state(self) -> None:
        """What the callback learns while it runs (nothing of it is an option)."""
        self.last_metrics: dict[str, float] = {}
        self.last_grid: Tensor | None = None
        self.last_pages: list[Tensor] = []
        self.last_filmstrip: Tensor | None = None
        self.last_statistics: StatisticsResult | None = None
        self.last_class_maps: Tensor | None = None
        self._history = History()
        self._samples: dict[str, FixedSamples] = {}
        self._sources: dict[str, tuple[Any, Any, bool]] = {}
        self._restored_indices: list[int] | None = None
        self._loaded_checkpoint = False
        self._layer_name: str | None = self.target_layer
        self._reading: str | None = None
        self._display: Display | None = None
        self._sinks: list[ImageSink] | None = None  # chosen at the first picture of a run
        self._dataset_class_names: list[str] | None = None
        self._warned: set[str] = set()
        self._guard = RunGuard(self.on_error, rank_zero_warn, MAX_CONSECUTIVE_FAILURES,
                               self.batch_size)
        self._attempt: Attempt | None = None

    def _fixed_samples(self, trainer: Trainer, stage: str, loaders: Any = None, *,
                       provisional: bool = False) -> FixedSamples:
        """The ``stage``'s fixed samples, read once and again only when its loader changes.

        ``loaders`` default to those the running loop has loaded. Samples read from
        loaders requested before the loop loaded its own (``provisional``) are kept when
        the loop's loader reads the same dataset; any other new loader (reloaded
        dataloaders, another datamodule) is read again.
        """
        if loaders is None:
            loaders = current_dataloaders(trainer, stage)
        cached = self._samples.get(stage)
        if loaders is None and cached is not None:
            return cached
        loader = self._reader.dataloader(loaders, stage)
        dataset = getattr(loader, "dataset", None)
        if cached is not None and stage in self._sources:
            old_loader, old_dataset, was_provisional = self._sources[stage]
            if old_loader is loader or (was_provisional and old_dataset is dataset):
                self._sources[stage] = (loader, dataset, provisional)
                return cached
        wanted = self._reader.wanted_indices()
        if stage == "validate" and self._restored_indices is not None:
            wanted = self._restored_indices
        self._samples[stage] = self._reader.read(loader, wanted, stage, self._warn_once)
        self._sources[stage] = (loader, dataset, provisional)
        self._dataset_class_names = _names_of(dataset)
        return self._samples[stage]

    @property
    def _class_names(self) -> Sequence[str] | None:
        """``class_names``, else the dataset's own (``classes`` or ``class_names``)."""
        return self.class_names if self.class_names is not None else self._dataset_class_names

    def _sample_options(self) -> dict[str, Any]:
        """The options that choose the fixed samples, as checkpointed."""
        reader = self._reader
        return {"num_samples": reader.num_samples, "dataloader_idx": reader.dataloader_idx,
                "sample_indices": (None if reader.sample_indices is None
                                   else list(reader.sample_indices))}

    @override
    def state_dict(self) -> dict[str, Any]:
        samples = self._samples.get("validate")
        indices = samples.indices if samples is not None else self._restored_indices
        return {"layer_name": self._layer_name, "sample_indices": indices,
                "sample_options": self._sample_options(), **self._history.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the layer, the samples shown and the drift history from a checkpoint.

        The checkpoint's samples are kept unless the sample options changed since: then the
        new options win (one warning names old and new) and the history restarts. A
        history that cannot be restored is dropped with a warning, never an error.
        """
        self._loaded_checkpoint = True
        self._samples.clear()
        self._sources.clear()
        version = state_dict.get("version", 1)
        if isinstance(version, int) and version > STATE_VERSION:
            self._warn_once("state_version", f"GradCAMCallback: the checkpoint's state has "
                            f"version {version}, newer than this version's {STATE_VERSION}; "
                            "restoring what this version understands.")
        self._layer_name = state_dict.get("layer_name", self._layer_name)
        try:
            self._history.load_state_dict(state_dict)
        except ValueError as error:
            self._warn_once("bad_history", f"GradCAMCallback: {error}; starting a new drift "
                            "history.")
        indices = state_dict.get("sample_indices")
        saved = state_dict.get("sample_options")
        self._restored_indices = list(indices) if indices is not None else None
        if saved is not None and saved != self._sample_options():
            changed = ", ".join(f"{key}={saved.get(key)!r} -> {value!r}"
                                for key, value in self._sample_options().items()
                                if saved.get(key) != value)
            self._warn_once("options_changed", f"GradCAMCallback: the sample options changed "
                            f"since the checkpoint ({changed}); the new ones win: showing "
                            f"other samples than before the resume (then: indices {indices}) "
                            "and starting a new drift history.")
            self._restored_indices = None
            self._history.clear()


def _names_of(dataset: object) -> list[str] | None:
    """A dataset's class names (torchvision's ``classes``, or ``class_names``), if any."""
    for attribute in ("classes", "class_names"):
        names = getattr(dataset, attribute, None)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None
