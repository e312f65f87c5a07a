"""Undefined numbers never stop a run: none is published as NaN, and a monitor that would
stop training with an error on a missing key is named before training.

The rule (README, "Reading the numbers"): a scalar that is undefined for a run is left out
of ``callback_metrics`` and the loggers for that run, said once with its cause; the key
keeps the last defined value, as Lightning's own logged keys do. ``conftest.py`` checks
for every test that nothing non-finite is published.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import LitTiny, ShapesData, StripeData, run_ddp_script

HERE = Path(__file__).resolve().parent
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}
PREFIX = "gradcam/features/"
SCALARS = ["border_energy", "border_lift", "location_consistency"] + [
    f"{kind}/{mask}" for mask in ("object_mask", "shortcut_mask")
    for kind in ("area", "energy_in_mask", "lift", "pointing_game")]
MONITORED = [name + suffix for name in SCALARS for suffix in ("", "_std", "_ci95")]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval"
                                                  "|does not have many workers).*")
        yield


class EmptyAtFirst(LitTiny):
    """A zero-initialised head, still for the first epoch: every logit is 0, so every
    Grad-CAM map is all zero at the first validation run; from the second epoch on the
    head learns and the maps fill in."""

    def __init__(self) -> None:
        super().__init__()
        torch.nn.init.zeros_(self.head[3].weight)
        torch.nn.init.zeros_(self.head[3].bias)

    def configure_optimizers(self):
        head = list(self.head.parameters())
        rest = [p for p in self.parameters() if all(p is not h for h in head)]
        return torch.optim.SGD([{"params": rest}, {"params": head, "lr": 0.0}],
                               lr=self.hparams.lr, momentum=0.9)

    def on_train_epoch_start(self) -> None:  # (a learning rate of 0 keeps DDP's buckets)
        self.trainer.optimizers[0].param_groups[1]["lr"] = (
            self.hparams.lr if self.current_epoch >= 1 else 0.0)


class Steps(Callback):
    def __init__(self) -> None:
        self.train, self.first = 0, {}

    def on_train_batch_end(self, trainer, *args):
        self.train += 1

    def on_validation_end(self, trainer, pl_module):
        if not self.first and not trainer.sanity_checking:
            self.first = {k: float(v) for k, v in trainer.callback_metrics.items()
                          if k.startswith("gradcam")}


def fit(tmp_path, callbacks, *, model=LitTiny, data=ShapesData, max_epochs=3, **kwargs):
    seed_everything(0)
    trainer = Trainer(max_epochs=max_epochs, callbacks=callbacks, default_root_dir=tmp_path,
                      logger=TensorBoardLogger(tmp_path, name="tb"), **QUIET, **kwargs)
    trainer.fit(model(), data())
    return trainer


def logged_gradcam_scalars(trainer) -> dict[str, list[float]]:
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if tag.startswith("gradcam")}


def test_early_stopping_on_every_scalar_trains_to_the_end_from_empty_maps(tmp_path):
    stoppers = [EarlyStopping(monitor=PREFIX + name, mode="max", patience=100)
                for name in MONITORED]
    checkpoints = [ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=PREFIX + name,
                                   mode="max", filename=name.replace("/", "-"))
                   for name in ("location_consistency", "lift/object_mask", "border_lift_std")]
    steps = Steps()
    trainer = fit(tmp_path, [GradCAMCallback("features", num_samples=2, metric_samples=16),
                             steps, *stoppers, *checkpoints], model=EmptyAtFirst)
    assert trainer.current_epoch == 3 and not any(s.stopped_epoch for s in stoppers)
    # the maps were empty at the first run, and every scalar was defined all the same
    assert steps.first[PREFIX + "border_energy"] == 0.0
    assert steps.first[PREFIX + "location_consistency"] == 0.0  # no place: nothing shared
    assert set(steps.first) >= {PREFIX + name for name in MONITORED}
    assert all(math.isfinite(v) for v in steps.first.values())
    assert all(checkpoint.best_model_path for checkpoint in checkpoints)
    logged = logged_gradcam_scalars(trainer)
    assert all(math.isfinite(v) for values in logged.values() for v in values)
    assert len(logged[PREFIX + "location_consistency"]) == 3


def monitor_error(tmp_path, callback, monitor, **fit_kwargs) -> str:
    steps = Steps()
    with pytest.raises(ValueError) as raised:
        fit(tmp_path, [callback, steps, monitor], **fit_kwargs)
    assert steps.train == 0  # before the first training step
    return str(raised.value)


def test_a_strict_monitor_of_a_number_undefined_with_one_sample_fails_before_training(tmp_path):
    message = monitor_error(
        tmp_path, GradCAMCallback("features", num_samples=1, metric_samples=1),
        EarlyStopping(monitor=PREFIX + "location_consistency"))
    assert message.startswith(
        "GradCAMCallback: EarlyStopping(monitor='gradcam/features/location_consistency', "
        "strict=True) would stop training with an error: location_consistency is undefined "
        "on the metric samples before training: no sample had another sample of its "
        "predicted class to compare with")
    assert "EarlyStopping(..., strict=False)" in message
    message = monitor_error(
        tmp_path / "b", GradCAMCallback("features", num_samples=1, metric_samples=1),
        ModelCheckpoint(dirpath=tmp_path, monitor=PREFIX + "border_lift_std"))
    assert "ModelCheckpoint(monitor='gradcam/features/border_lift_std')" in message
    assert "a spread needs at least two samples" in message


def test_a_lenient_monitor_trains_on_and_the_undefined_numbers_are_named_once(tmp_path):
    stopper = EarlyStopping(monitor=PREFIX + "location_consistency", strict=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer = fit(tmp_path, [GradCAMCallback("features", num_samples=1, metric_samples=1,
                                                 faithfulness_samples=0, sanity_layers=0),
                                 stopper])
    assert trainer.current_epoch == 3
    said = [str(w.message) for w in seen if "undefined at epoch" in str(w.message)]
    assert len(said) == len(SCALARS)  # one line per scalar, its spreads with it
    assert (f"GradCAMCallback: {PREFIX}location_consistency, {PREFIX}location_consistency_std "
            f"and {PREFIX}location_consistency_ci95 are undefined at epoch 0: no sample had "
            "another sample of its predicted class") in "\n".join(said)
    assert (f"GradCAMCallback: {PREFIX}border_lift_std and {PREFIX}border_lift_ci95 are "
            "undefined at epoch 0: a spread needs at least two samples") in "\n".join(said)
    metrics = trainer.callback_metrics
    assert PREFIX + "location_consistency" not in metrics
    assert PREFIX + "border_lift_std" not in metrics
    assert math.isfinite(float(metrics[PREFIX + "border_lift"]))
    assert PREFIX + "location_consistency" not in logged_gradcam_scalars(trainer)


def nothing(batch):
    return {"nothing": torch.zeros(len(batch["image"]), 32, 32, dtype=torch.bool)}


def test_the_lift_of_a_mask_empty_everywhere_is_undefined_not_zero(tmp_path):
    message = monitor_error(tmp_path, GradCAMCallback("features", mask_fn=nothing),
                            EarlyStopping(monitor=PREFIX + "lift/nothing"))
    assert "lift/nothing is undefined on the metric samples before training: the mask " \
           "'nothing' is empty in every sample (a lift divides by the mask's area)" in message
    for metric_samples in (0, 8):  # from the statistics, and from the shown samples alone
        trainer = fit(tmp_path / str(metric_samples),
                      [GradCAMCallback("features", mask_fn=nothing, num_samples=4,
                                       metric_samples=metric_samples),
                       EarlyStopping(monitor=PREFIX + "energy_in_mask/nothing", mode="max")],
                      max_epochs=2)
        logged = logged_gradcam_scalars(trainer)
        assert logged[PREFIX + "energy_in_mask/nothing"] == [0.0, 0.0]  # no mass in nothing
        assert logged[PREFIX + "area/nothing"] == [0.0, 0.0]
        assert PREFIX + "lift/nothing" not in logged
        assert PREFIX + "lift/nothing" not in trainer.callback_metrics


def test_drift_reaches_callback_metrics_from_the_second_run_and_needs_a_lenient_monitor(
        tmp_path):
    message = monitor_error(tmp_path, GradCAMCallback("features"),
                            EarlyStopping(monitor=PREFIX + "drift"))
    assert "drift is undefined at the first run (there is no earlier run" in message
    monitor_error(tmp_path / "b", GradCAMCallback("features"),
                  ModelCheckpoint(dirpath=tmp_path, monitor=PREFIX + "drift_from_start"))
    steps = Steps()
    gradcam = GradCAMCallback("features", num_samples=2)
    trainer = fit(tmp_path / "c", [gradcam, steps,
                                   EarlyStopping(monitor=PREFIX + "drift", strict=False)])
    assert PREFIX + "drift" not in steps.first  # the first run has none
    assert float(trainer.callback_metrics[PREFIX + "drift"]) == pytest.approx(
        gradcam.last_metrics[PREFIX + "drift"])


def test_every_n_epochs_leaves_epochs_without_a_value_and_a_typo_gets_a_suggestion(tmp_path):
    message = monitor_error(tmp_path, GradCAMCallback("features", every_n_epochs=2),
                            EarlyStopping(monitor=PREFIX + "border_lift"))
    assert "with every_n_epochs=2 the first run is at epoch 1" in message
    message = monitor_error(tmp_path / "b", GradCAMCallback("features"),
                            EarlyStopping(monitor=PREFIX + "border_lfit"))
    assert "publishes no scalar 'border_lfit' (did you mean 'border_lift'" in message
    trainer = fit(tmp_path / "c", [GradCAMCallback("features", every_n_epochs=2),
                                   EarlyStopping(monitor=PREFIX + "border_lift", strict=False)])
    assert trainer.current_epoch == 3


def test_with_metric_samples_0_the_shown_scalars_reach_callback_metrics(tmp_path):
    gradcam = GradCAMCallback("features", num_samples=4, metric_samples=0)
    stopper = EarlyStopping(monitor=PREFIX + "lift/object_mask", mode="max", patience=100)
    trainer = fit(tmp_path, [gradcam, stopper], max_epochs=2)
    assert trainer.current_epoch == 2
    assert float(trainer.callback_metrics[PREFIX + "lift/object_mask"]) == pytest.approx(
        gradcam.last_metrics[PREFIX + "lift/object_mask"])


def test_monitors_of_other_keys_and_other_layers_are_left_alone(tmp_path):
    trainer = fit(tmp_path, [GradCAMCallback("features", num_samples=2, metric_samples=8),
                             EarlyStopping(monitor="val_loss"),
                             EarlyStopping(monitor="gradcam/head/border_lift", strict=False)],
                  data=StripeData, max_epochs=1)
    assert trainer.current_epoch == 1


@pytest.mark.slow
def test_ddp_two_ranks_monitor_every_scalar_from_empty_maps_and_agree(tmp_path):
    ranks = run_ddp_script("ddp_undefined_script.py", tmp_path)
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == 3  # nothing stopped
    assert ranks[0]["first"] == ranks[1]["first"]  # the same values on both ranks
    assert ranks[0]["first"][PREFIX + "location_consistency"] == 0.0
    assert set(ranks[0]["first"]) >= {PREFIX + name for name in MONITORED}
    assert PREFIX + "drift" in ranks[1]["last"]  # rank zero's history, broadcast
    assert all(math.isfinite(v) for r in ranks for v in r["last"].values())
    assert ranks[0]["last"] == ranks[1]["last"]
