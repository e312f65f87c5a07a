"""The fixed samples of each stage, read once and again only when their loader changes.

A :class:`SampleStore` keeps, per stage (``"validate"``, ``"test"``), the samples the
callback shows, with the one source of their class names (the ``class_names`` option,
else the dataset's own) and the one rule for their display (:func:`.choose_display`), so
the grid, the filmstrip and the class maps name and show them alike. After a resume, the
validation samples are the ones the checkpoint showed (:attr:`SampleStore.restored_indices`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch.utils.data import DataLoader

from gradcam_callback.notices import Notices
from gradcam_callback.samples.display import choose_display
from gradcam_callback.samples.reader import (
    FixedSamples,
    SampleReader,
    dataset_class_names,
    empty_masks,
)

__all__ = ["SampleStore"]


@dataclass
class _Entry:
    samples: FixedSamples
    loader: DataLoader
    dataset: Any
    provisional: bool


@dataclass
class SampleStore:
    """The fixed samples per stage.

    Attributes:
        reader: how to find and read them (the sample options).
        notices: where the warnings about them go.
        restored_indices: the validation samples a checkpoint showed, shown again.
    """

    reader: SampleReader = field(default_factory=SampleReader)
    notices: Notices = field(default_factory=Notices)
    restored_indices: list[int] | None = None
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def get(self, stage: str, loaders: Any, *, provisional: bool = False) -> FixedSamples:
        """The ``stage``'s fixed samples from ``loaders`` (a trainer's val/test dataloaders).

        ``loaders`` ``None`` (the loop has loaded none yet) returns the samples read
        before. Samples read from loaders requested before the loop loaded its own
        (``provisional``) are kept when the loop's loader reads the same dataset; any other
        new loader (reloaded dataloaders, another datamodule) is read again.

        Raises:
            ValueError: no dataloader, or samples the options cannot read.
        """
        entry = self._entries.get(stage)
        if loaders is None and entry is not None:
            return entry.samples
        loader = self.reader.dataloader(loaders, stage)
        dataset = getattr(loader, "dataset", None)
        if entry is not None and (entry.loader is loader
                                  or (entry.provisional and entry.dataset is dataset)):
            self._entries[stage] = replace(entry, loader=loader, provisional=provisional)
            return entry.samples
        wanted = self.reader.options.wanted_indices()
        if stage == "validate" and self.restored_indices is not None:
            wanted = list(self.restored_indices)
        samples = self.read(loader, wanted, stage)
        options = self.reader.options
        names = (options.class_names if options.class_names is not None
                 else dataset_class_names(dataset))
        display = choose_display(options.mean, options.std, dataset)
        if options.mean is None:
            self.notices.info_once("display", f"GradCAMCallback display: {display.source}")
        samples = replace(samples, class_names=names, display=display)
        self._entries[stage] = _Entry(samples, loader, dataset, provisional)
        return samples

    def read(self, loader: DataLoader, indices: list[int] | range, stage: str) -> FixedSamples:
        """Samples ``indices`` of ``loader``'s dataset (fixed ones or a statistics chunk);
        a mask empty for some of them is named once, with their dataset indices."""
        samples = self.reader.read(loader, list(indices), stage, self.notices)
        for name, empty in empty_masks(samples).items():
            self.notices.warn_once(
                f"empty_{name}",
                f"GradCAMCallback: mask {name!r} is empty for samples {empty[:8]}"
                f"{'...' if len(empty) > 8 else ''} (dataset indices); their lift is left "
                "out (it divides by the mask's area), their energy_in_mask and "
                "pointing_game count as 0.")
        return samples

    def loader_for(self, stage: str, loaders: Any) -> DataLoader:
        """The ``stage``'s loader among ``loaders``; with none loaded yet, the one its
        samples were read from (e.g. requested for the check before training).

        Raises:
            ValueError: no loader at all, or no ``dataloader_idx``-th one.
        """
        if loaders is None and stage in self._entries:
            return self._entries[stage].loader
        return self.reader.dataloader(loaders, stage)

    def cached(self, stage: str) -> FixedSamples | None:
        """The ``stage``'s samples read so far, or ``None``."""
        entry = self._entries.get(stage)
        return entry.samples if entry is not None else None

    def forget(self) -> None:
        """Read every stage again next time (new options, a new fit, a checkpoint)."""
        self._entries.clear()

    def shown_indices(self) -> list[int] | None:
        """The validation samples shown (or restored and not yet read), for a checkpoint."""
        samples = self.cached("validate")
        return samples.indices if samples is not None else self.restored_indices
