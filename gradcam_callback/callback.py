"""
Grad-CAM Callback
=================

Watch where the model looks while it trains: at the end of validation runs, compute class
activation maps on a fixed set of validation images and log an annotated grid to
TensorBoard (or PNG files when there is no TensorBoard logger).

The only module of the package that imports Lightning; everything it computes comes from
:mod:`gradcam_callback.cam` and :mod:`gradcam_callback.render`.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, default_collate
from typing_extensions import override

from gradcam_callback.cam import CAM_METHODS, compute_cam, explain_batch
from gradcam_callback.hooks import preserved_rng_state
from gradcam_callback.layers import resolve_layer, vit_reshape_transform
from gradcam_callback.metrics import (
    attention_drift,
    border_energy,
    energy_in_mask,
    pointing_game,
)
from gradcam_callback.render import (
    IMAGE_FORMATS,
    annotated_grid,
    colormap_lut,
    encode_image,
    filmstrip,
    filmstrip_frames,
    heatmap,
    overlay,
    resize_maps,
    resize_tiles,
    to_display,
    to_uint8,
)

__all__ = ["GradCAMCallback"]

_TARGET_WORDS = ("predicted", "label", "both")
_SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
_HISTORY_SIZE = 64  # longer side of the maps kept per run for drift and the filmstrip


class GradCAMCallback(Callback):
    r"""Log Grad-CAM overlays of fixed validation images to TensorBoard during training.

    At the end of every ``every_n_epochs``-th epoch's validation runs (never during the
    sanity check), rank zero takes the first ``num_samples`` samples of the validation
    dataset (the same ones every time, read by index through the dataloader's
    ``collate_fn``), computes CAMs at ``target_layer``, and logs one image
    ``gradcam/<layer>/overlay`` at ``trainer.global_step``: one column per sample, rows
    "input" and the CAM overlay, each column captioned with the true label, the
    predicted label and its probability, and framed in red when the prediction is wrong.

    Scalars go to every logger at the same step, under ``gradcam/<layer>/``:
    ``border_energy`` (the share of CAM mass in the outer 10% frame: borders, corner
    patches, watermarks), ``energy_in_mask/<name>`` and ``pointing_game/<name>`` for each
    region mask the batch provides, and from the second run on ``drift`` (against the
    previous run) and ``drift_from_start`` (against the first); formulas in
    :mod:`gradcam_callback.metrics`. At the end of fit, ``gradcam/<layer>/filmstrip`` shows
    every sample's map across the runs in one picture, also saved as a PNG.

    The last grid and scalars stay available as ``last_grid`` (uint8 ``(3, H, W)``) and
    ``last_metrics``.

    Explaining the model has no effect on training: the model runs in eval mode for the
    computation only, no ``.grad`` is touched, and the global RNG states are restored, so
    a seeded, deterministic run trains bit-identically with and without the callback.

    Args:
        target_layer: dotted name of the layer to explain, as ``model.named_modules()``
            spells it (``"backbone.layer4"``); ``None`` picks the last layer with a spatial
            output (printed in the tag).
        num_samples: how many validation samples to show (the first ones by index).
        every_n_epochs: log on every n-th epoch.
        method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"`` or ``"eigencam"``.
        target: the score to explain: ``"predicted"`` (each sample's predicted class),
            ``"label"`` (its ground-truth class from the batch), ``"both"`` (two rows:
            predicted and ground truth, the view that explains a wrong answer), a class
            index, or a callable ``logits -> (N,)`` scores.
        sample_indices: explicit dataset indices to show instead of the first
            ``num_samples``.
        dataloader_idx: which validation (and test) dataloader to take samples from.
        input_key: the images' key when the dataset yields dicts.
        label_key: the labels' key when the dataset yields dicts (missing = no labels).
        batch_to_input: a callable ``batch -> inputs`` or ``batch -> (inputs, labels)``
            for other batch formats (an import path in YAML).
        class_names: names shown instead of class indices.
        mean: per-channel mean used to normalise the inputs, to show them as they were.
        std: per-channel std used to normalise the inputs. Without ``mean``/``std`` each
            image is min-max scaled for display.
        colormap: any matplotlib colormap name.
        alpha: heatmap opacity in the overlay, in ``[0, 1]``.
        show_heatmap: add a row with the bare heatmaps.
        max_image_size: downscale tiles whose longer side exceeds this (pixels);
            ``None`` keeps the input size. Small inputs are upscaled to stay legible.
        reshape_transform: for non-spatial layers such as ViT blocks: a callable such as
            ``gradcam_callback.vit_reshape_transform(num_prefix_tokens=1)``, or the string
            ``"vit"`` for that one (convenient in YAML).
        output_transform: picks the logits out of a model output that is not a tensor.
        mask_keys: keys of dict batches holding region masks ``(N, H, W)`` to measure CAM
            energy in; ``None`` takes every key ending in ``"_mask"``.
        mask_fn: a callable ``batch -> {name: (N, H, W) bool mask}``, for other formats.
        filmstrip_max: at most this many runs (columns) in the filmstrip, evenly spread.
        save_gif: also write an animated GIF of each sample's maps over the runs.
        image_format: how grids are encoded in the event files and fallback images:
            ``"jpeg"`` (quality 90) or ``"png"`` (lossless, several times larger).
            Size matters twice: on disk, and because TensorBoard's writer computes a
            pure-Python checksum of every event (about 0.2 s of CPU per MB).

    Raises:
        ValueError: an argument out of its valid range (the message names it and says what
            is valid); at setup, an unknown ``target_layer`` (with the closest names) or a
            sharded strategy (FSDP, DeepSpeed), which this callback does not support.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> from gradcam_callback import GradCAMCallback
        >>> trainer = Trainer(callbacks=[GradCAMCallback(target_layer="layer4", num_samples=8)])
    """

    def __init__(
        self,
        target_layer: str | None = None,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        method: str = "gradcam",
        target: str | int | Callable[[Tensor], Tensor] = "predicted",
        *,
        sample_indices: Sequence[int] | None = None,
        dataloader_idx: int = 0,
        input_key: str = "image",
        label_key: str = "label",
        batch_to_input: Callable[[Any], Any] | None = None,
        class_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "jet",
        alpha: float = 0.5,
        show_heatmap: bool = False,
        max_image_size: int | None = 256,
        reshape_transform: Callable[[Tensor], Tensor] | str | None = None,
        output_transform: Callable[[Any], Tensor] | None = None,
        mask_keys: Sequence[str] | None = None,
        mask_fn: Callable[[Any], dict[str, Tensor]] | None = None,
        filmstrip_max: int = 12,
        save_gif: bool = False,
        image_format: str = "jpeg",
    ) -> None:
        super().__init__()
        if target_layer is not None and not isinstance(target_layer, str):
            raise ValueError(
                f"GradCAMCallback(target_layer={target_layer!r}): pass the layer's dotted "
                "name as model.named_modules() spells it (e.g. 'backbone.layer4'), or None"
            )
        _check_positive_int("num_samples", num_samples)
        _check_positive_int("every_n_epochs", every_n_epochs)
        _check_positive_int("filmstrip_max", filmstrip_max)
        if filmstrip_max < 2:
            raise ValueError(
                f"GradCAMCallback(filmstrip_max={filmstrip_max}): must be >= 2 (first and last run)"
            )
        if method not in CAM_METHODS:
            raise ValueError(
                f"GradCAMCallback(method={method!r}): valid methods are {', '.join(CAM_METHODS)}"
            )
        _check_target(target)
        if sample_indices is not None and not _valid_indices(sample_indices):
            raise ValueError(
                f"GradCAMCallback(sample_indices={sample_indices!r}): give a non-empty "
                "list of dataset indices >= 0"
            )
        if not isinstance(dataloader_idx, int) or dataloader_idx < 0:
            raise ValueError(
                f"GradCAMCallback(dataloader_idx={dataloader_idx!r}): must be an int >= 0"
            )
        if (mean is None) != (std is None):
            raise ValueError(
                f"GradCAMCallback(mean={mean!r}, std={std!r}): pass both (one value per input "
                "channel) or neither"
            )
        if mean is not None and std is not None:
            if len(mean) != len(std):
                raise ValueError(
                    f"GradCAMCallback(mean={list(mean)}, std={list(std)}): need the same "
                    "number of values, one per input channel"
                )
            if any(s <= 0 for s in std):
                raise ValueError(f"GradCAMCallback(std={list(std)}): every std must be > 0")
        try:
            colormap_lut(colormap)
        except ValueError as error:
            raise ValueError(f"GradCAMCallback(colormap={colormap!r}): {error}") from None
        if image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"GradCAMCallback(image_format={image_format!r}): valid formats are "
                f"{', '.join(IMAGE_FORMATS)}"
            )
        if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"GradCAMCallback(alpha={alpha!r}): must be in [0, 1]")
        if max_image_size is not None and (
            not isinstance(max_image_size, int) or max_image_size < 16
        ):
            raise ValueError(
                f"GradCAMCallback(max_image_size={max_image_size!r}): must be an int >= 16 "
                "(pixels) or None"
            )

        self.target_layer = target_layer
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.method = method
        self.target = target
        self.sample_indices = list(sample_indices) if sample_indices is not None else None
        self.dataloader_idx = dataloader_idx
        self.input_key = input_key
        self.label_key = label_key
        self.batch_to_input = batch_to_input
        self.class_names = list(class_names) if class_names is not None else None
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None
        self.colormap = colormap
        self.alpha = float(alpha)
        self.show_heatmap = show_heatmap
        self.max_image_size = max_image_size
        self.reshape_transform = _reshape_transform(reshape_transform)
        self.output_transform = output_transform
        self.mask_keys = list(mask_keys) if mask_keys is not None else None
        self.mask_fn = mask_fn
        self.filmstrip_max = filmstrip_max
        self.save_gif = save_gif
        self.image_format = image_format

        self.last_metrics: dict[str, float] = {}
        self._history_maps: list[Tensor] = []
        self._history_epochs: list[int] = []
        self._history_steps: list[int] = []
        self.last_grid: Tensor | None = None
        self._layer_name: str | None = target_layer
        self._batches: dict[str, _FixedBatch] = {}
        self._used_indices: list[int] | None = None
        self._image_dir: Path | None = None
        self._warned: set[str] = set()

    @property
    @override
    def state_key(self) -> str:
        target = self.target if isinstance(self.target, (str, int)) else "callable"
        return self._generate_state_key(
            target_layer=self.target_layer or "auto", method=self.method, target=target
        )

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        strategy = type(trainer.strategy).__name__
        if strategy in _SHARDED_STRATEGIES:
            raise ValueError(
                f"GradCAMCallback does not support {strategy}: its parameters are sharded "
                "across ranks, so rank zero cannot run the model alone. Use strategy='ddp' "
                "(or explain a checkpoint after training with compute_cam)."
            )
        if self.target_layer is not None:
            resolve_layer(pl_module, self.target_layer)
        # trainer.log_dir is a collective under DDP: read it here, where every rank is.
        self._image_dir = Path(trainer.log_dir or trainer.default_root_dir) / "gradcam"

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_skip_validation(trainer):
            return
        self.log_cams(trainer, pl_module, stage="validate")

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_cams(trainer, pl_module, stage="test")

    def _should_skip_validation(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return True
        fitting = trainer.state.fn == "fit"
        return fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0

    def log_cams(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Compute and log the grid and the scalars now (rank zero only; others return).

        Args:
            trainer: the running trainer.
            pl_module: the model being trained.
            stage: ``"validate"`` or ``"test"``: whose dataloader to take samples from.
                Validation runs also extend the drift history and the filmstrip.
        """
        if not trainer.is_global_zero:
            return
        with preserved_rng_state(pl_module.device):
            batch = self._fixed_batch(trainer, stage)
            inputs = trainer.precision_plugin.convert_input(batch.inputs.to(pl_module.device))
            explained, logits = self._explain(pl_module, inputs, batch.labels)
            self.last_grid = self._grid(batch, explained, logits)
            prefix = f"gradcam/{self._layer_name}/" + ("" if stage == "validate" else f"{stage}/")
            self._log_image(trainer, prefix + "overlay", self.last_grid)
            primary = explained[0][0].cpu()
            metrics = self._measure(primary, batch.masks)
            if stage == "validate":
                metrics.update(self._remember(primary, trainer))
            self.last_metrics = {prefix + name: value for name, value in metrics.items()}
            for logger in trainer.loggers:
                logger.log_metrics(self.last_metrics, step=trainer.global_step)

    def _explain(
        self, pl_module: LightningModule, inputs: Tensor, labels: Tensor | None
    ) -> tuple[list[tuple[Tensor, str]], Tensor]:
        """The maps to show, each with its row title, and the logits of the forward pass."""
        common = {
            "method": self.method,
            "reshape_transform": self.reshape_transform,
            "output_transform": self.output_transform,
        }
        primary = "predicted" if self.target == "both" else self.target
        result = explain_batch(
            pl_module, inputs, self._layer_name, self._targets(primary, labels), **common
        )
        self._layer_name = result.layer_name
        name = "Grad-CAM" if self.method == "gradcam" else self.method
        if self.target != "both":
            return [(result.cams, name + (" (label)" if self.target == "label" else ""))], \
                result.logits
        by_label = compute_cam(pl_module, inputs, self._layer_name,
                               self._targets("label", labels), **common)
        return [(result.cams, f"{name} (predicted)"), (by_label, f"{name} (label)")], \
            result.logits

    def _display_images(self, batch: _FixedBatch) -> Tensor:
        return resize_tiles(to_display(batch.inputs, self.mean, self.std), self.max_image_size)

    def _grid(
        self, batch: _FixedBatch, explained: list[tuple[Tensor, str]], logits: Tensor
    ) -> Tensor:
        images = self._display_images(batch)
        rows, titles = [to_uint8(images)], ["input"]
        for cams, title in explained:
            cams = resize_maps(cams.cpu(), images.shape[-2:])
            rows.append(overlay(images, cams, colormap=self.colormap, alpha=self.alpha))
            titles.append(title)
            if self.show_heatmap:
                rows.append(to_uint8(heatmap(cams, colormap=self.colormap)))
                titles.append("heatmap")
        captions, wrong = self._captions(logits.float().cpu(), batch.labels)
        return annotated_grid(rows, titles, captions, wrong)

    def _measure(self, cams: Tensor, masks: dict[str, Tensor]) -> dict[str, float]:
        metrics = {"border_energy": border_energy(cams).mean().item()}
        for name, mask in masks.items():
            empty = ~mask.flatten(1).any(dim=1)
            if empty.any():
                self._warn_once(
                    f"empty_{name}",
                    f"GradCAMCallback: mask {name!r} is empty for samples "
                    f"{empty.nonzero().flatten().tolist()}; their energy_in_mask and "
                    "pointing_game count as 0.",
                )
            metrics[f"energy_in_mask/{name}"] = energy_in_mask(cams, mask).mean().item()
            metrics[f"pointing_game/{name}"] = pointing_game(cams, mask).float().mean().item()
        return metrics

    def _remember(self, cams: Tensor, trainer: Trainer) -> dict[str, float]:
        """Add this run's maps to the history; return the drift against the last and first."""
        small = _shrink(cams, _HISTORY_SIZE).half()
        drift = {}
        if self._history_maps:
            previous, first = self._history_maps[-1].float(), self._history_maps[0].float()
            drift["drift"] = attention_drift(previous, small.float()).mean().item()
            drift["drift_from_start"] = attention_drift(first, small.float()).mean().item()
        self._history_maps.append(small)
        self._history_epochs.append(trainer.current_epoch)
        self._history_steps.append(trainer.global_step)
        return drift

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_filmstrip(trainer)

    def log_filmstrip(self, trainer: Trainer) -> Tensor | None:
        """Log and save the filmstrip of the runs so far; called at the end of fit.

        One image ``gradcam/<layer>/filmstrip``: a row per fixed sample, a column per logged
        validation run (evenly subsampled to at most ``filmstrip_max``), the epoch above
        each. Also written as a PNG (and, with ``save_gif``, an animated GIF per sample)
        under ``<trainer.log_dir>/gradcam/``. Rank zero only.

        Returns:
            The filmstrip as uint8 ``(3, H, W)``, or ``None`` on other ranks or before any run.
        """
        if not trainer.is_global_zero or not self._history_maps:
            return None
        batch = self._fixed_batch(trainer, "validate")
        runs = _evenly_spaced(len(self._history_maps), self.filmstrip_max)
        history = torch.stack([self._history_maps[r] for r in runs])
        titles = [f"epoch {self._history_epochs[r]}" for r in runs]
        images = self._display_images(batch)
        rows = [f"#{index}" + ("" if batch.labels is None
                               else f" {self._class_name(int(batch.labels[i]))}")
                for i, index in enumerate(batch.indices)]
        style = {"colormap": self.colormap, "alpha": self.alpha}
        strip = filmstrip(images, history, titles, rows, **style)
        tag = f"gradcam/{self._layer_name}/filmstrip"
        for logger in self._tensorboards(trainer):
            self._write_image(logger, tag, strip, trainer.global_step)
        out = self._output_dir()
        (out / f"{self._layer_name}_filmstrip.png").write_bytes(encode_image(strip, "png"))
        if self.save_gif:
            for index, frames in zip(batch.indices,
                                     filmstrip_frames(images, history, titles, **style),
                                     strict=True):
                pictures = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in frames]
                pictures[0].save(out / f"{self._layer_name}_sample{index}.gif", save_all=True,
                                 append_images=pictures[1:], duration=700, loop=0)
        return strip

    def _captions(
        self, logits: Tensor, labels: Tensor | None
    ) -> tuple[list[list[str]], list[bool]]:
        count = logits.shape[0]
        lines: list[list[str]] = [[] for _ in range(count)]
        wrong = [False] * count
        if labels is not None:
            for i in range(count):
                lines[i].append(f"true: {self._class_name(int(labels[i]))}")
        if logits.dim() == 2:
            probs = logits.softmax(dim=1)
            confidence, predicted = probs.max(dim=1)
            for i in range(count):
                lines[i].append(
                    f"pred: {self._class_name(int(predicted[i]))} {confidence[i].item():.2f}"
                )
                if labels is not None:
                    wrong[i] = int(predicted[i]) != int(labels[i])
        return lines, wrong

    def _class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def _targets(self, target: Any, labels: Tensor | None) -> Any:
        if target == "predicted":
            return None
        if target == "label":
            if labels is None:
                raise ValueError(
                    f"GradCAMCallback(target={self.target!r}) needs labels, but the batch has "
                    f"none: for dict samples set label_key (now {self.label_key!r}), or return "
                    "(inputs, labels) from batch_to_input"
                )
            return labels
        return target

    def _fixed_batch(self, trainer: Trainer, stage: str) -> _FixedBatch:
        if stage not in self._batches:
            loader = self._dataloader(trainer, stage)
            collated, indices = self._collate_samples(loader, stage)
            inputs, labels = self._split(collated)
            self._batches[stage] = _FixedBatch(inputs.detach().cpu(), labels,
                                               self._masks(collated, inputs), indices)
        return self._batches[stage]

    def _dataloader(self, trainer: Trainer, stage: str) -> DataLoader:
        loaders = trainer.val_dataloaders if stage == "validate" else trainer.test_dataloaders
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        if not isinstance(loaders, (list, tuple)):
            loaders = [loaders]
        if self.dataloader_idx >= len(loaders):
            raise ValueError(
                f"GradCAMCallback(dataloader_idx={self.dataloader_idx}): there "
                f"{'is' if len(loaders) == 1 else 'are'} {len(loaders)} {stage} dataloader(s); "
                f"valid: 0..{len(loaders) - 1}"
            )
        return loaders[self.dataloader_idx]

    def _collate_samples(self, loader: DataLoader, stage: str) -> tuple[Any, list[int]]:
        dataset = loader.dataset
        restored = self._used_indices if stage == "validate" else None  # from a checkpoint
        wanted = restored or self.sample_indices or list(range(self.num_samples))
        if isinstance(dataset, IterableDataset):
            items = list(itertools.islice(iter(dataset), max(wanted) + 1))
            indices = [i for i in wanted if i < len(items)]
        else:
            size = len(dataset)
            if self.sample_indices is not None:
                beyond = [i for i in self.sample_indices if i >= size]
                if beyond:
                    raise ValueError(
                        f"GradCAMCallback(sample_indices=...): index {beyond[0]} is beyond the "
                        f"{stage} dataset of {size} samples (valid: 0..{size - 1})"
                    )
            indices = [i for i in wanted if i < size]
            items = dataset
        if not indices:
            raise ValueError(f"GradCAMCallback: the {stage} dataset is empty")
        if len(indices) < len(wanted):
            self._warn_once(
                "few_samples",
                f"GradCAMCallback asked for {len(wanted)} samples, the {stage} dataset has "
                f"{len(indices)}: showing {len(indices)}.",
            )
        if stage == "validate":
            self._used_indices = indices  # checkpointed: a resumed run shows the same samples
        collate = loader.collate_fn or default_collate
        return collate([items[i] for i in indices]), indices

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if self.batch_to_input is not None:
            out = self.batch_to_input(batch)
            inputs, labels = out if isinstance(out, (tuple, list)) else (out, None)
        elif isinstance(batch, dict):
            if self.input_key not in batch:
                raise ValueError(
                    f"GradCAMCallback(input_key={self.input_key!r}): the batch is a dict with "
                    f"keys {sorted(map(str, batch))}; set input_key (and label_key) to match"
                )
            inputs, labels = batch[self.input_key], batch.get(self.label_key)
        elif isinstance(batch, (tuple, list)):
            inputs = batch[0]
            labels = batch[1] if len(batch) > 1 else None
        else:
            inputs, labels = batch, None
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(
                f"GradCAMCallback: expected image inputs (N, C, H, W) from the batch, got "
                f"{shape}; pass batch_to_input= for other batch formats"
            )
        if not (isinstance(labels, Tensor) and labels.dim() == 1
                and not labels.dtype.is_floating_point):
            labels = None  # one-hot, multi-label, masks...: not class indices, so not shown
        return inputs, (labels.cpu() if labels is not None else None)

    def _masks(self, batch: Any, inputs: Tensor) -> dict[str, Tensor]:
        """Named regions ``(N, H, W)`` bool, from ``mask_fn`` or the batch's mask keys."""
        if self.mask_fn is not None:
            found = self.mask_fn(batch)
            if not isinstance(found, dict):
                raise ValueError(
                    f"GradCAMCallback: mask_fn must return a dict name -> (N, H, W) mask, got "
                    f"{type(found).__name__}"
                )
        elif isinstance(batch, dict):
            keys = self.mask_keys if self.mask_keys is not None else [
                k for k in batch if isinstance(k, str) and k.endswith("_mask")]
            missing = [k for k in keys if k not in batch]
            if missing:
                raise ValueError(
                    f"GradCAMCallback(mask_keys={list(keys)}): the batch has no {missing[0]!r}; "
                    f"its keys are {sorted(map(str, batch))}"
                )
            found = {k: batch[k] for k in keys}
        else:
            return {}
        masks = {}
        for name, mask in found.items():
            if not isinstance(mask, Tensor) or mask.dim() != 3 or mask.shape[0] != len(inputs):
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(
                    f"GradCAMCallback: mask {name!r} must be (N, H, W) with N = {len(inputs)}, "
                    f"got {shape}"
                )
            masks[name] = mask.detach().cpu().bool()
        return masks

    @staticmethod
    def _tensorboards(trainer: Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def _output_dir(self) -> Path:
        if self._image_dir is None:
            raise RuntimeError("GradCAMCallback: setup() has not run; add it to a Trainer")
        self._image_dir.mkdir(parents=True, exist_ok=True)
        return self._image_dir

    def _log_image(self, trainer: Trainer, tag: str, grid: Tensor) -> None:
        step = trainer.global_step
        tensorboards = self._tensorboards(trainer)
        for logger in tensorboards:
            self._write_image(logger, tag, grid, step)
        if tensorboards:
            return
        self._warn_once(
            "no_tensorboard",
            f"GradCAMCallback found no TensorBoardLogger in trainer.loggers; writing PNGs to "
            f"{self._image_dir} instead.",
        )
        name = tag.removeprefix("gradcam/").replace("/", "_")
        suffix = "png" if self.image_format == "png" else "jpg"
        path = self._output_dir() / f"{name}_step{step:07d}.{suffix}"
        path.write_bytes(encode_image(grid, self.image_format))

    def _write_image(self, logger: TensorBoardLogger, tag: str, picture: Tensor,
                     step: int) -> None:
        write_image_summary(logger.experiment, tag, picture, step, self.image_format)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "layer_name": self._layer_name,
            "sample_indices": self._used_indices,
            "history_epochs": list(self._history_epochs),
            "history_steps": list(self._history_steps),
            "history_maps": torch.stack(self._history_maps) if self._history_maps else None,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._layer_name = state_dict.get("layer_name", self._layer_name)
        self._used_indices = state_dict.get("sample_indices")
        maps = state_dict.get("history_maps")
        self._history_maps = list(maps.unbind(0)) if maps is not None else []
        self._history_epochs = list(state_dict.get("history_epochs", []))
        self._history_steps = list(state_dict.get("history_steps", []))
        self._batches.clear()


@dataclass
class _FixedBatch:
    """The samples the callback explains, kept on the CPU for the whole run."""

    inputs: Tensor
    labels: Tensor | None
    masks: dict[str, Tensor]
    indices: list[int]


def write_image_summary(writer: Any, tag: str, picture: Tensor, step: int,
                        image_format: str = "png") -> None:
    """Write uint8 ``(3, H, W)`` to a TensorBoard ``SummaryWriter`` as one image summary.

    Encoded here (see :func:`~gradcam_callback.render.encode_image`): ``add_image`` always
    uses Pillow's default PNG compression, the slowest part of logging a large grid.
    """
    if not hasattr(writer, "_get_file_writer"):  # not torch's SummaryWriter: its own path
        writer.add_image(tag, picture, global_step=step, dataformats="CHW")
        return
    image = Summary.Image(height=picture.shape[1], width=picture.shape[2], colorspace=3,
                          encoded_image_string=encode_image(picture, image_format))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                          step)


def _shrink(cams: Tensor, size: int) -> Tensor:
    """Maps with the longer side at most ``size`` (antialiased), for the history."""
    height, width = cams.shape[-2:]
    scale = size / max(height, width)
    if scale >= 1:
        return cams
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(cams.unsqueeze(1), size=target, mode="bilinear", antialias=True,
                         align_corners=False).squeeze(1)


def _evenly_spaced(count: int, limit: int) -> list[int]:
    """At most ``limit`` indices of ``range(count)``, evenly spread, first and last included."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"GradCAMCallback({name}={value!r}): must be an int >= 1")


def _reshape_transform(value: object) -> Callable[[Tensor], Tensor] | None:
    if value is None or (callable(value) and not isinstance(value, str)):
        return value
    if value == "vit":
        return vit_reshape_transform(num_prefix_tokens=1)
    raise ValueError(
        f"GradCAMCallback(reshape_transform={value!r}): pass a callable, 'vit' (tokens with one "
        "class token), or None"
    )


def _valid_indices(indices: Sequence[object]) -> bool:
    return len(indices) > 0 and all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in indices
    )


def _check_target(target: object) -> None:
    if callable(target) or target in _TARGET_WORDS:
        return
    if isinstance(target, int) and not isinstance(target, bool) and target >= 0:
        return
    raise ValueError(
        f"GradCAMCallback(target={target!r}): valid targets are 'predicted', 'label', 'both', "
        "a class index >= 0, or a callable logits -> (N,) scores"
    )
