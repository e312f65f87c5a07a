"""The fixed samples: which validation images the callback explains, read the same way every run.

Samples are fetched *by dataset index* through the loader's own ``collate_fn``: no
iterator is created and no random number is drawn, so the same images come back on every
epoch and every rank, whatever the loader's shuffling or sampler.

Region masks are binarised at :data:`MASK_THRESHOLD` (0.5): a soft mask counts a pixel as
inside where its value is above one half, here and in :mod:`gradcam_callback.metrics`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, default_collate

from gradcam_callback.notices import Notices
from gradcam_callback.options import SampleOptions
from gradcam_callback.samples.display import Display

__all__ = [
    "KINDS",
    "MASK_THRESHOLD",
    "FixedSamples",
    "SampleReader",
    "dataset_class_names",
    "dataset_size",
    "empty_masks",
    "input_kind",
]

KINDS = {3: ("signal", "(N, T)"), 4: ("image", "(N, H, W)"), 5: ("volume", "(N, D, H, W)")}
"""Input rank -> the kind of input and the shape of its masks (and maps)."""

MASK_THRESHOLD = 0.5
"""A soft mask counts a pixel as inside where its value is above this (metrics do the same)."""


@dataclass(frozen=True)
class FixedSamples:
    """Samples the callback explains, on the CPU, with how to name and show them.

    Attributes:
        indices: their dataset indices.
        inputs: the model inputs as the loader's collate made them: images ``(N, C, H, W)``,
            signals ``(N, C, T)`` or volumes ``(N, C, D, H, W)``.
        labels: the labels as the batch holds them (one row per sample: class indices,
            0/1 sides, multi-hot rows, label masks, values), or ``None`` when the batch has
            none; the task reads them (:meth:`gradcam_callback.tasks.Task.labels`).
        masks: named bool region masks of the inputs' rank: ``(N, H, W)``, ``(N, T)`` or
            ``(N, D, H, W)``.
        label_note: when ``labels`` is ``None``: why (no labels; labels that are not one
            row per input) and what to do.
        class_names: the names shown for class indices: the ``class_names`` option, else
            the dataset's own (``classes`` or ``class_names``), else ``None`` (indices).
        display: how to show the inputs (see :mod:`.display`).
    """

    indices: list[int]
    inputs: Tensor
    labels: Tensor | None
    masks: dict[str, Tensor] = field(default_factory=dict)
    label_note: str | None = None
    class_names: Sequence[str] | None = None
    display: Display = field(default_factory=Display.batch_scaled)

    @property
    def size(self) -> tuple[int, ...]:
        """The inputs' spatial size: ``(H, W)``, ``(T,)`` or ``(D, H, W)``."""
        return tuple(int(side) for side in self.inputs.shape[2:])

    @property
    def kind(self) -> str:
        """``"image"``, ``"signal"`` or ``"volume"`` (see :func:`input_kind`)."""
        return input_kind(self.inputs)


@dataclass(frozen=True)
class SampleReader:
    """How to find and read samples by index (the callback's sample options).

    Example::

        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.zeros(10, 3, 8, 8), torch.arange(10))
        >>> read = SampleReader().read(DataLoader(data), [2, 5], "validate")
        >>> read.indices, read.labels.tolist(), tuple(read.inputs.shape)
        ([2, 5], [2, 5], (2, 3, 8, 8))
    """

    options: SampleOptions = field(default_factory=SampleOptions)

    def dataloader(self, loaders: Any, stage: str) -> DataLoader:
        """The ``dataloader_idx``-th of a trainer's ``val_dataloaders``/``test_dataloaders``."""
        if loaders is None:
            raise ValueError(f"GradCAMCallback needs a {stage} dataloader, and there is none")
        loaders = getattr(loaders, "iterables", loaders)  # a CombinedLoader
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        if not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        if self.options.dataloader_idx >= len(loaders):
            raise ValueError(
                f"dataloader_idx={self.options.dataloader_idx}: there "
                f"{'is' if len(loaders) == 1 else 'are'} {len(loaders)} {stage} dataloader(s); "
                f"valid: 0..{len(loaders) - 1}"
            )
        loader: DataLoader = loaders[self.options.dataloader_idx]
        return loader

    def read(self, loader: DataLoader, indices: Sequence[int], stage: str,
             notices: Notices | None = None) -> FixedSamples:
        """Fetch ``indices`` from the loader's dataset, collate, split and find the masks.

        Raises:
            ValueError: an index beyond the dataset, an empty dataset, or a batch the
                options cannot read (the message names the option to set).
        """
        if not hasattr(loader, "dataset"):
            raise ValueError(
                f"dataloader_idx={self.options.dataloader_idx}: the {stage} dataloader is a "
                f"{type(loader).__name__} without a dataset; GradCAMCallback reads samples by "
                "index from a torch DataLoader's dataset"
            )
        # a validate or test loop runs in inference mode; tensors made there cannot take
        # part in autograd later (the CAM pass), so the samples are made outside it
        notices = notices if notices is not None else Notices()
        with torch.inference_mode(False):
            collated, found = self._collate(loader, list(indices), stage, notices)
            inputs, labels, note = self._split(collated)
            masks = self.masks(collated, inputs, notices)
            inputs = inputs.detach().cpu()
            if inputs.is_inference():
                inputs = inputs.clone()
        return FixedSamples(found, inputs, labels, masks, note)

    def _collate(self, loader: DataLoader, wanted: list[int], stage: str,
                 notices: Notices) -> tuple[Any, list[int]]:
        dataset = loader.dataset
        items: Any
        if isinstance(dataset, IterableDataset):
            items = list(itertools.islice(iter(dataset), max(wanted) + 1))
            indices = [i for i in wanted if i < len(items)]
        else:
            size = len(dataset)  # type: ignore[arg-type]
            if self.options.sample_indices is not None:
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
            notices.warn_once("few_samples",
                              f"GradCAMCallback asked for {len(wanted)} samples, the {stage} "
                              f"dataset has {len(indices)}: showing {len(indices)}.")
        collate = loader.collate_fn or default_collate
        return collate([items[i] for i in indices]), indices

    def split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """``(inputs, labels)`` of a collated batch (labels as the batch holds them, or
        ``None``)."""
        inputs, labels, _ = self._split(batch)
        return inputs, labels

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None, str | None]:
        """``(inputs, labels, note)``; without labels, ``note`` says why and what to do."""
        if self.options.batch_to_input is not None:
            out = self.options.batch_to_input(batch)
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
            if self.options.input_key not in batch:
                raise ValueError(
                    f"input_key={self.options.input_key!r}: the batch is a dict with keys "
                    f"{sorted(map(str, batch))}; set input_key (and label_key) to match"
                )
            inputs, labels = batch[self.options.input_key], batch.get(self.options.label_key)
        elif isinstance(batch, (tuple, list)):
            inputs = batch[0]
            labels = batch[1] if len(batch) > 1 else None
        else:
            inputs, labels = batch, None
        if not isinstance(inputs, Tensor) or inputs.dim() not in KINDS:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            source = ("batch_to_input returned" if self.options.batch_to_input is not None
                      else "the batch holds")
            raise ValueError(
                f"GradCAMCallback: expected inputs with a batch and a channel dim: signals "
                f"(N, C, T), images (N, C, H, W) or volumes (N, C, D, H, W), but {source} "
                f"{shape}; pass batch_to_input= (a callable batch -> inputs or "
                "(inputs, labels)) for other batch formats"
            )
        if not inputs.dtype.is_floating_point:
            raise ValueError(
                f"GradCAMCallback: the inputs are {inputs.dtype}, not floating point; "
                "convert and normalise them in the dataset (or in batch_to_input) as the "
                "model expects"
            )
        problem = _label_problem(labels, len(inputs))
        if problem is not None:
            return inputs, None, (f"{problem}: return (inputs, labels) from batch_to_input "
                                  "with one label row per input")
        if labels is None:
            return inputs, None, (f"the batch has none: for dict samples set label_key (now "
                                  f"{self.options.label_key!r}), or return (inputs, labels) "
                                  "from batch_to_input")
        assert isinstance(labels, Tensor)
        return inputs, labels.detach().cpu().clone(), None

    def masks(self, batch: Any, inputs: Tensor,
              notices: Notices | None = None) -> dict[str, Tensor]:
        """Named bool regions of the inputs' rank (``(N, H, W)``, ``(N, T)``,
        ``(N, D, H, W)``), from ``mask_fn`` or the batch's mask keys.

        A mask with a channel dim of one (``(N, 1, H, W)``) is squeezed. With automatic
        discovery (keys ending in ``_mask``) a value that is not a mask is skipped with one
        warning; a mask named explicitly (``mask_keys``, ``mask_fn``) must be one.
        """
        explicit = True
        if self.options.mask_fn is not None:
            found = self.options.mask_fn(batch)
            if not isinstance(found, dict):
                raise ValueError(
                    f"mask_fn must return a dict name -> (N, H, W) mask, got "
                    f"{type(found).__name__}"
                )
        elif isinstance(batch, dict):
            explicit = self.options.mask_keys is not None
            keys = self.options.mask_keys if self.options.mask_keys is not None else [
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
        rank = inputs.dim() - 1  # (N, *S)
        want = KINDS[inputs.dim()][1]
        for name, mask in found.items():
            if isinstance(mask, Tensor) and mask.dim() == rank + 1 and mask.shape[1] == 1:
                mask = mask[:, 0]
            if (not isinstance(mask, Tensor) or mask.dim() != rank
                    or mask.shape[0] != len(inputs)):
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                message = (f"mask {name!r} must be {want} with N = {len(inputs)}, the rank of "
                           f"the inputs {tuple(inputs.shape)}, got {shape}")
                if explicit:
                    raise ValueError(f"GradCAMCallback: {message}")
                (notices or Notices()).warn_once(
                    f"not_mask_{name}", f"GradCAMCallback: skipping batch key {name!r}: "
                    f"{message}. Name the masks with mask_keys= to silence this.")
                continue
            if inputs.dim() != 4 and _missing_axis(mask.shape[1:], inputs.shape[2:]):
                raise ValueError(
                    f"GradCAMCallback: mask {name!r} has size {tuple(mask.shape[1:])} for "
                    f"inputs of size {tuple(inputs.shape[2:])}: an axis of one where the "
                    f"inputs have more (a mask of fewer dims?); give {want} masks")
            masks[str(name)] = mask.detach().cpu().float() > MASK_THRESHOLD
        return masks


def _missing_axis(mask: tuple[int, ...] | torch.Size, inputs: tuple[int, ...] | torch.Size
                  ) -> bool:
    """Whether a mask has an axis of one where the inputs have more (a 2-D mask read as a
    volume of depth one)."""
    return any(int(m) == 1 < int(i) for m, i in zip(mask, inputs, strict=True))


def _label_problem(labels: object, count: int) -> str | None:
    """Why ``labels`` are not labels of ``count`` inputs, or ``None`` if they are (or
    absent). What they mean (class indices, sides, multi-hot, masks, values) the task
    reads (:mod:`gradcam_callback.tasks`)."""
    if labels is None:
        return None
    if not isinstance(labels, Tensor):
        return f"the labels are a {type(labels).__name__}, not a tensor"
    if labels.dim() == 0 or len(labels) != count:
        return (f"the labels have shape {tuple(labels.shape)}, not one row per input "
                f"({count}, ...)")
    return None


def input_kind(inputs: Tensor) -> str:
    """``"signal"`` for ``(N, C, T)``, ``"image"`` for ``(N, C, H, W)``, ``"volume"`` for
    ``(N, C, D, H, W)``.

    Example::

        >>> input_kind(torch.zeros(2, 1, 8, 8, 8)), input_kind(torch.zeros(2, 12, 500))
        ('volume', 'signal')
    """
    if inputs.dim() not in KINDS:
        raise ValueError(f"inputs {tuple(inputs.shape)} are neither signals (N, C, T), images "
                         "(N, C, H, W) nor volumes (N, C, D, H, W)")
    return KINDS[inputs.dim()][0]


def empty_masks(samples: FixedSamples) -> dict[str, list[int]]:
    """Per mask, the dataset indices of the samples for which it is empty."""
    found = {}
    for name, mask in samples.masks.items():
        empty = (~mask.flatten(1).any(dim=1)).nonzero().flatten().tolist()
        if empty:
            found[name] = [samples.indices[i] for i in empty]
    return found


def dataset_class_names(dataset: object) -> list[str] | None:
    """A dataset's class names (torchvision's ``classes``, or ``class_names``), if any.

    Example::

        >>> class Data:
        ...     classes = ["cat", "dog"]
        >>> dataset_class_names(Data()), dataset_class_names(object())
        (['cat', 'dog'], None)
    """
    for attribute in ("classes", "class_names"):
        names = getattr(dataset, attribute, None)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def dataset_size(dataset: object, limit: int) -> int:
    """How many samples to take from a dataset: ``limit`` capped at its length (an
    iterable dataset without a length is taken at its word)."""
    try:
        return min(limit, len(dataset))  # type: ignore[arg-type]
    except TypeError:
        return limit
