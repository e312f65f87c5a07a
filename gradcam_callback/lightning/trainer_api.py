"""What the callback asks of the trainer: the one place that knows Lightning's insides.

Everything else of the callback uses the trainer's public properties. Two answers have no
public property, and are read here, each with a fallback to the public one when a
Lightning release lays its loops out otherwise (``tests/test_parts.py`` checks them
against the installed Lightning):

- which dataloaders the *running* loop has loaded (``trainer.val_dataloaders`` returns
  those of an earlier ``fit`` during ``trainer.validate()``): each loop's
  ``_combined_loader``;
- where fit's validation loop will ask for its dataloaders before it has (the check
  before training without a sanity check): its ``_data_source``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from gradcam_callback.statistics import Collectives

__all__ = [
    "collectives",
    "current_dataloaders",
    "dataloaders",
    "fitting",
    "model_inputs",
    "publish",
    "rank_zero_broadcast",
    "requested_dataloaders",
    "steps_per_validation",
]


def fitting(trainer: Trainer) -> bool:
    """Whether ``trainer.fit()`` is running (not ``validate``/``test``)."""
    return trainer.state.fn == "fit"


def current_dataloaders(trainer: Trainer, stage: str) -> Any:
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


def requested_dataloaders(trainer: Trainer) -> Any:
    """Ask fit's validation data source for its dataloaders now, before the loop does.

    For the check before training when no sanity check has loaded them. A datamodule's
    or the model's ``val_dataloader()`` is called (once more than Lightning would); loaders
    passed to ``fit`` directly are returned as they are. Returns ``None`` when fit has no
    validation data. Callers preserve the RNG states around this call.
    """
    loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "val_loop", None)
    source = getattr(loop, "_data_source", None)  # where Lightning itself will ask
    if source is None:  # another Lightning layout: what the trainer has, if anything
        return trainer.val_dataloaders
    if not source.is_defined():
        return None
    return source.dataloader()


def dataloaders(trainer: Trainer, stage: str) -> tuple[Any, bool]:
    """``(loaders, provisional)``: the running loop's, else (in fit, before the validation
    loop has loaded any: the check before training without a sanity check, or
    ``every_n_steps`` before the first validation) those it will ask for, on every rank.
    Callers preserve the RNG states around this call."""
    loaders = current_dataloaders(trainer, stage)
    if loaders is None and fitting(trainer):
        return requested_dataloaders(trainer), True
    return loaders, False


def steps_per_validation(trainer: Trainer) -> float:
    """About how many optimizer steps fit makes from one validation to the next (``inf``
    when unknown), from the trainer's public settings."""
    batches = getattr(trainer, "val_check_batch", None)
    if not isinstance(batches, (int, float)):
        batches = trainer.num_training_batches
    epochs = getattr(trainer, "check_val_every_n_epoch", None) or 1
    return float(batches) * epochs / max(1, int(trainer.accumulate_grad_batches))


def model_inputs(trainer: Trainer, pl_module: LightningModule) -> Callable[[Tensor], Tensor]:
    """CPU inputs -> the model's device and the precision plugin's input dtype."""
    def prepare(inputs: Tensor) -> Tensor:
        converted: Tensor = trainer.precision_plugin.convert_input(inputs.to(pl_module.device))
        return converted

    return prepare


def rank_zero_broadcast(trainer: Trainer) -> Callable[[Any], Any]:
    """Send rank zero's object to every rank (every rank must call the result)."""
    if trainer.world_size == 1:
        return lambda obj: obj
    return lambda obj: trainer.strategy.broadcast(obj, src=0)


def collectives(trainer: Trainer, pl_module: LightningModule) -> Collectives | None:
    """The strategy's sum and broadcast for the statistics; ``None`` on one process."""
    if trainer.world_size == 1:
        return None

    def reduce_sum(tensor: Tensor) -> Tensor:
        total: Tensor = trainer.strategy.reduce(tensor, reduce_op="sum")
        return total

    def broadcast(obj: Any, src: int) -> Any:
        return trainer.strategy.broadcast(obj, src=src)

    return Collectives(reduce_sum, broadcast, pl_module.device, trainer.global_rank,
                       trainer.world_size)


def publish(trainer: Trainer, scalars: Mapping[str, float]) -> None:
    """Put the scalars into ``trainer.callback_metrics`` (``EarlyStopping``,
    ``ModelCheckpoint`` and the progress bar read them there), on this rank. Keys
    absent from ``scalars`` keep what they had, as Lightning's own logged keys do."""
    metrics = trainer.callback_metrics
    for name, value in scalars.items():
        metrics[name] = torch.tensor(float(value))
