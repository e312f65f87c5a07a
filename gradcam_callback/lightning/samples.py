"""The fixed samples: which validation images the callback explains, read the same way every run.

Samples are fetched *by dataset index* through the loader's own ``collate_fn``: no
iterator is created and no random number is drawn, so the same images come back on every
epoch and every rank, whatever the loader's shuffling or sampler.

Region masks are binarised at :data:`MASK_THRESHOLD` (0.5): a soft mask counts a pixel as
inside where its value is above one half, here and in :mod:`gradcam_callback.metrics`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, default_collate

__all__ = [
    "MASK_THRESHOLD",
    "FixedSamples",
    "SampleReader",
    "current_dataloaders",
    "requested_dataloaders",
]

MASK_THRESHOLD = 0.5
"""A soft mask counts a pixel as inside where its value is above this (metrics do the same)."""


@dataclass(frozen=True)
class FixedSamples:
    """The samples the callback explains, on the CPU.

    Attributes:
        indices: their dataset indices.
        inputs: the model inputs ``(N, C, H, W)`` as the loader's collate made them.
        labels: class indices ``(N,)``, or ``None`` when the batch has none.
        masks: named bool region masks ``(N, H, W)``.
        label_note: why the batch's labels are not used as class indices (their dtype
            and shape), or ``None`` when they are or when there are none.
    """

    indices: list[int]
    inputs: Tensor
    labels: Tensor | None
    masks: dict[str, Tensor] = field(default_factory=dict)
    label_note: str | None = None


@dataclass(frozen=True)
class SampleReader:
    """How to find and read the fixed samples (the callback's sample options)."""

    num_samples: int = 8
    sample_indices: Sequence[int] | None = None
    dataloader_idx: int = 0
    input_key: str = "image"
    label_key: str = "label"
    batch_to_input: Callable[[Any], Any] | None = None
    mask_keys: Sequence[str] | None = None
    mask_fn: Callable[[Any], dict[str, Tensor]] | None = None

    def wanted_indices(self) -> list[int]:
        """The dataset indices asked for, before checking the dataset's size."""
        if self.sample_indices is not None:
            return list(self.sample_indices)
        return list(range(self.num_samples))

    def dataloader(self, loaders: Any, stage: str) -> DataLoader:
        """The ``dataloader_idx``-th of a trainer's ``val_dataloaders``/``test_dataloaders``."""
        if loaders is None:
            raise ValueError(f"GradCAMCallback needs a {stage} dataloader, and there is none")
        loaders = getattr(loaders, "iterables", loaders)  # a CombinedLoader
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        if not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        if self.dataloader_idx >= len(loaders):
            raise ValueError(
                f"dataloader_idx={self.dataloader_idx}: there "
                f"{'is' if len(loaders) == 1 else 'are'} {len(loaders)} {stage} dataloader(s); "
                f"valid: 0..{len(loaders) - 1}"
            )
        return loaders[self.dataloader_idx]

    def read(self, loader: DataLoader, indices: Sequence[int], stage: str,
             warn: Callable[[str, str], None]) -> FixedSamples:
        """Fetch ``indices`` from the loader's dataset, collate, split and find the masks.

        Raises:
            ValueError: an index beyond the dataset, an empty dataset, or a batch the
                options cannot read (the message names the option to set).
        """
        if not hasattr(loader, "dataset"):
            raise ValueError(
                f"dataloader_idx={self.dataloader_idx}: the {stage} dataloader is a "
                f"{type(loader).__name__} without a dataset; GradCAMCallback reads samples by "
                "index from a torch DataLoader's dataset"
            )
        # a validate or test loop runs in inference mode; tensors made there cannot take
        # part in autograd later (the CAM pass), so the samples are made outside it
        with torch.inference_mode(False):
            collated, found = self._collate(loader, list(indices), stage, warn)
            inputs, labels, note = self._split(collated)
            masks = self.masks(collated, inputs, warn)
            inputs = inputs.detach().cpu()
            if inputs.is_inference():
                inputs = inputs.clone()
        return FixedSamples(found, inputs, labels, masks, note)

    def _collate(self, loader: DataLoader, wanted: list[int], stage: str,
                 warn: Callable[[str, str], None]) -> tuple[Any, list[int]]:
        dataset = loader.dataset
        if isinstance(dataset, IterableDataset):
            items = list(itertools.islice(iter(dataset), max(wanted) + 1))
            indices = [i for i in wanted if i < len(items)]
        else:
            size = len(dataset)  # type: ignore[arg-type]
            if self.sample_indices is not None:
                beyond = [i for i in wanted if i >= size]
                if beyond:
                    raise ValueError(
                        f"sample_indices: index {beyond[0]} is beyond the {stage} dataset of "
                        f"{size} samples (valid: 0..{size - 1})"
                    )
            indices = [i for i in wanted if i < size]
            items = dataset
        if not indices:
            raise ValueError(f"GradCAMCallback: the {stage} dataset is empty")
        if len(indices) < len(wanted):
            warn("few_samples",
                 f"GradCAMCallback asked for {len(wanted)} samples, the {stage} dataset has "
                 f"{len(indices)}: showing {len(indices)}.")
        collate = loader.collate_fn or default_collate
        return collate([items[i] for i in indices]), indices

    def split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """``(inputs, labels)`` of a collated batch; labels are ``None`` unless class indices."""
        inputs, labels, _ = self._split(batch)
        return inputs, labels

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None, str | None]:
        """``(inputs, labels, note)``; ``note`` says why labels found are not class indices."""
        if self.batch_to_input is not None:
            out = self.batch_to_input(batch)
            if isinstance(out, (tuple, list)) and len(out) in (1, 2):
                inputs, labels = out[0], (out[1] if len(out) == 2 else None)
            elif isinstance(out, (tuple, list)):
                raise ValueError(
                    f"batch_to_input must return inputs or (inputs, labels), got a "
                    f"{type(out).__name__} of {len(out)} items"
                )
            else:
                inputs, labels = out, None
        elif isinstance(batch, dict):
            if self.input_key not in batch:
                raise ValueError(
                    f"input_key={self.input_key!r}: the batch is a dict with keys "
                    f"{sorted(map(str, batch))}; set input_key (and label_key) to match"
                )
            inputs, labels = batch[self.input_key], batch.get(self.label_key)
        elif isinstance(batch, (tuple, list)):
            inputs = batch[0]
            labels = batch[1] if len(batch) > 1 else None
        else:
            inputs, labels = batch, None
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            source = ("batch_to_input returned" if self.batch_to_input is not None
                      else "the batch holds")
            raise ValueError(
                f"GradCAMCallback: expected image inputs (N, C, H, W), but {source} "
                f"{shape}; pass batch_to_input= (a callable batch -> inputs or "
                "(inputs, labels)) for other batch formats"
            )
        if not inputs.dtype.is_floating_point:
            raise ValueError(
                f"GradCAMCallback: the inputs are {inputs.dtype}, not floating point; "
                "convert and normalise them in the dataset (or in batch_to_input) as the "
                "model expects"
            )
        note = _label_problem(labels, len(inputs))
        if note is not None:
            labels = None  # one-hot, multi-label, masks...: not class indices, so not shown
        return inputs, (labels.detach().cpu().clone() if labels is not None else None), note

    def masks(self, batch: Any, inputs: Tensor,
              warn: Callable[[str, str], None]) -> dict[str, Tensor]:
        """Named regions ``(N, H, W)`` bool, from ``mask_fn`` or the batch's mask keys.

        A ``(N, 1, H, W)`` mask is squeezed. With automatic discovery (keys ending in
        ``_mask``) a value that is not a mask is skipped with one warning; a mask named
        explicitly (``mask_keys``, ``mask_fn``) must be one.
        """
        explicit = True
        if self.mask_fn is not None:
            found = self.mask_fn(batch)
            if not isinstance(found, dict):
                raise ValueError(
                    f"mask_fn must return a dict name -> (N, H, W) mask, got "
                    f"{type(found).__name__}"
                )
        elif isinstance(batch, dict):
            explicit = self.mask_keys is not None
            keys = self.mask_keys if self.mask_keys is not None else [
                k for k in batch if isinstance(k, str) and k.endswith("_mask")]
            missing = [k for k in keys if k not in batch]
            if missing:
                raise ValueError(
                    f"mask_keys={list(keys)}: the batch has no {missing[0]!r}; its keys are "
                    f"{sorted(map(str, batch))}"
                )
            found = {k: batch[k] for k in keys}
        else:
            return {}
        masks = {}
        for name, mask in found.items():
            if isinstance(mask, Tensor) and mask.dim() == 4 and mask.shape[1] == 1:
                mask = mask[:, 0]
            if not isinstance(mask, Tensor) or mask.dim() != 3 or mask.shape[0] != len(inputs):
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                message = (f"mask {name!r} must be (N, H, W) with N = {len(inputs)}, "
                           f"got {shape}")
                if explicit:
                    raise ValueError(f"GradCAMCallback: {message}")
                warn(f"not_mask_{name}", f"GradCAMCallback: skipping batch key {name!r}: "
                     f"{message}. Name the masks with mask_keys= to silence this.")
                continue
            masks[str(name)] = mask.detach().cpu().float() > MASK_THRESHOLD
        return masks


def _label_problem(labels: object, count: int) -> str | None:
    """Why ``labels`` are not ``count`` class indices, or ``None`` if they are (or absent)."""
    if labels is None:
        return None
    if not isinstance(labels, Tensor):
        return f"the labels are a {type(labels).__name__}, not a tensor"
    shape = tuple(labels.shape)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        kind = " (one-hot or soft labels?)" if labels.dim() == 2 else ""
        return f"the labels are {labels.dtype} of shape {shape}{kind}, not integers"
    if labels.dim() != 1:
        kind = " (one-hot?)" if labels.dim() == 2 else ""
        return f"the labels have shape {shape}{kind}, not ({count},)"
    if len(labels) != count:
        return f"the labels have shape {shape}, not ({count},) like the inputs"
    return None


def current_dataloaders(trainer: Any, stage: str) -> Any:
    """The dataloaders the running ``stage`` loop has loaded, or ``None`` before it has.

    Each loop's own: ``trainer.val_dataloaders`` would return those of an earlier ``fit``
    during ``trainer.validate()``, and those of an earlier ``validate()`` during a ``fit``
    whose validation loop has not loaded its own yet.
    """
    if stage == "test":
        loop = getattr(trainer, "test_loop", None)
    elif getattr(trainer.state, "fn", None) == "validate":
        loop = getattr(trainer, "validate_loop", None)
    else:
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        loop = getattr(loop, "val_loop", None)
    if loop is None or not hasattr(loop, "_combined_loader"):  # another Lightning layout
        return trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    combined = loop._combined_loader
    return combined.iterables if combined is not None else None


def requested_dataloaders(trainer: Any) -> Any:
    """Ask fit's validation data source for its dataloaders now, before the loop does.

    For the check before training when no sanity check has loaded them. A datamodule's
    or the model's ``val_dataloader()`` is called (once more than Lightning would); loaders
    passed to ``fit`` directly are returned as they are. Returns ``None`` when fit has no
    validation data. Callers preserve the RNG states around this call.
    """
    loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "val_loop", None)
    source = getattr(loop, "_data_source", None)  # where Lightning itself will ask
    if source is None or not source.is_defined():
        return None
    return source.dataloader()
