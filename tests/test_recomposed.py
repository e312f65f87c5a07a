"""The bugs the five-mixin layout let in, each as a user met it, and the new trigger.

Each test names the bug of issue 17 it pins (1-8); each failed on the mixin layout. Then
``every_n_steps``: pictures and scalars every N training steps, combined with
``every_n_epochs``, a step explained once.
"""

from __future__ import annotations

import errno
import warnings

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset

import gradcam_callback.explainer as explainer_module
from gradcam_callback import GradCAMCallback
from gradcam_callback.lightning import sinks
from gradcam_callback.render import to_display
from gradcam_callback.render.class_maps import class_maps_grid
from gradcam_callback.render.run import Renderer
from gradcam_callback.statistics import StatisticsRunner
from tests.lit_helpers import CLASS_NAMES, LitTiny, StripeData, StripeDataset
from tests.test_content import Layout

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
         "enable_checkpointing": False}
TAG = "gradcam/features/overlay"


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        yield


def fit(tmp_path, callbacks, *, data=None, max_epochs=2, **trainer_kwargs):
    seed_everything(0)
    model = LitTiny()
    trainer = Trainer(max_epochs=max_epochs, callbacks=callbacks, default_root_dir=tmp_path,
                      logger=TensorBoardLogger(tmp_path, name="tb"), **QUIET, **trainer_kwargs)
    trainer.fit(model, data or StripeData())
    return trainer


def events(trainer) -> EventAccumulator:
    accumulator = EventAccumulator(trainer.logger.log_dir,
                                   size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def image_steps(trainer, tag=TAG) -> list[int]:
    found = events(trainer)
    return [e.step for e in found.Images(tag)] if tag in found.Tags()["images"] else []


class NamedStripes(StripeDataset):
    """A torchvision-style dataset: class names in ``classes``."""

    classes = CLASS_NAMES


class NamedStripeData(StripeData):
    def __init__(self) -> None:
        super().__init__()
        self.train_set = NamedStripes(96, seed=1)
        self.val_set = NamedStripes(24, seed=2)


def test_1_the_class_maps_name_classes_as_the_grid_does_from_the_datasets_classes(tmp_path):
    callback = GradCAMCallback("features", num_samples=2, metric_samples=24)
    fit(tmp_path, [callback], data=NamedStripeData(), max_epochs=1)
    statistics = callback.last_statistics
    rows = [("by prediction", statistics.by_prediction, statistics.prediction_counts),
            ("by label", statistics.by_label, statistics.label_counts)]
    backdrop = to_display(statistics.mean_image.unsqueeze(0), None, None, joint=True)[0]
    named = class_maps_grid(rows, backdrop, CLASS_NAMES)
    numbered = class_maps_grid(rows, backdrop, None)
    assert not torch.equal(named, numbered)  # the captions differ, so the pictures do
    assert torch.equal(callback.last_class_maps, named)


class MaskedStripes(Dataset):
    """Dict samples with a ``box_mask`` that is empty for dataset index 9 only."""

    def __init__(self) -> None:
        self.stripes = StripeDataset(12, seed=2)

    def __len__(self) -> int:
        return len(self.stripes)

    def __getitem__(self, index):
        image, label = self.stripes[index]
        mask = torch.zeros(32, 32, dtype=torch.bool)
        if index != 9:
            mask[4:12, 4:12] = True
        return {"image": image, "label": label, "box_mask": mask}


class MaskedData(StripeData):
    def val_dataloader(self):
        return DataLoader(MaskedStripes(), batch_size=6)

    def train_dataloader(self):
        return DataLoader(StripeDataset(48, seed=1), batch_size=16)


@pytest.mark.parametrize("metric_samples", [0, 12])
def test_2_an_empty_mask_is_named_once_by_its_dataset_index(tmp_path, metric_samples):
    callback = GradCAMCallback("features", sample_indices=[5, 9, 3],
                               metric_samples=metric_samples)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(tmp_path, [callback], data=MaskedData(), max_epochs=2)
    said = [str(w.message) for w in seen if "mask 'box_mask' is empty" in str(w.message)]
    assert len(said) == 1
    assert "samples [9] (dataset indices)" in said[0]  # not its position in the batch, 1


class NormalizedStripes(StripeDataset):
    """Normalised by a torchvision ``Normalize`` in its transform, as datasets usually are;
    the images span [0.2, 0.7], so a min-max scaling would show them otherwise."""

    def __init__(self, n: int, seed: int) -> None:
        import torchvision.transforms as T

        super().__init__(n, seed=seed)
        self.images = 0.2 + 0.5 * self.images
        self.transform = T.Normalize([0.5] * 3, [0.25] * 3)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


class NormalizedData(StripeData):
    def __init__(self) -> None:
        super().__init__()
        self.val_set = NormalizedStripes(24, seed=2)


def input_tile(grid, columns, header, column=0):
    return Layout(grid, columns=columns, caption_lines=2, header=header).tile(0, column)


@pytest.mark.parametrize("metric_samples", [0, 24])
def test_3_the_grid_undoes_the_datasets_normalize_with_or_without_statistics(
        tmp_path, metric_samples):
    callback = GradCAMCallback("features", num_samples=2, metric_samples=metric_samples)
    fit(tmp_path, [callback], data=NormalizedData(), max_epochs=1)
    inputs = callback.samples.inputs
    for column in range(2):
        expected = (inputs[column] * 0.25 + 0.5).clamp(0, 1)
        expected = (expected * 255).round().to(torch.uint8)
        expected = expected.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
        difference = (input_tile(callback.last_grid, 2, True, column).int()
                      - expected.int()).abs()
        assert difference.max() <= 1, "the input row is not x * std + mean"


def test_3_the_check_before_a_run_draws_with_the_display_the_run_shows(tmp_path, monkeypatch):
    """One display rule: the check before ``validate`` (which draws the first page, without
    a header) shows the inputs exactly as the run's grid then does."""
    drawn = []
    original = Renderer.encodes
    monkeypatch.setattr(Renderer, "encodes",
                        lambda self, pictures: drawn.extend(pictures) or original(self, pictures))
    callback = GradCAMCallback("features", num_samples=2, image_format="png")
    seed_everything(0)
    trainer = Trainer(logger=TensorBoardLogger(tmp_path, name="tb"), callbacks=[callback],
                      **QUIET)
    trainer.validate(LitTiny(), NormalizedData())
    (checked,) = drawn
    assert torch.equal(input_tile(checked, 2, header=False),
                       input_tile(callback.last_grid, 2, header=True))


def full_disk(monkeypatch):
    def refuse(self, tag, picture, step, caption=""):
        raise OSError(errno.ENOSPC, "No space left on device", "/events")

    monkeypatch.setattr(sinks.TensorBoardSink, "log_image", refuse)


def test_4_setting_an_option_applies_it_everywhere_or_raises_and_changes_nothing(
        tmp_path, monkeypatch):
    callback = GradCAMCallback("features", num_samples=2)
    with pytest.raises(ValueError, match=r"^on_error='maybe': valid values are 'warn', 'raise'"):
        callback.on_error = "maybe"
    assert callback.on_error == "warn"
    callback.num_samples = 3
    callback.on_error = "raise"
    full_disk(monkeypatch)
    with pytest.raises(OSError, match="No space left"):  # the failure policy took it
        fit(tmp_path, [callback], max_epochs=1)
    assert callback.samples.indices == [0, 1, 2]  # and so did the samples


class CountCams(Callback):
    """Counts the CAM passes (calls of the engine) of each validation run."""

    def __init__(self, monkeypatch) -> None:
        self.calls, self.per_run = 0, []
        original = explainer_module.explain_batch

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(explainer_module, "explain_batch", counted)

    def on_train_start(self, trainer, pl_module):
        self.calls = 0  # (the check before training, which ran just before, not counted)

    def on_validation_epoch_end(self, trainer, pl_module):
        self.per_run.append(self.calls)
        self.calls = 0


def test_5_a_switched_off_callback_explains_nothing_on_any_later_run(tmp_path, monkeypatch):
    full_disk(monkeypatch)
    counter = CountCams(monkeypatch)
    callback = GradCAMCallback("features", num_samples=2, metric_samples=24,
                               metric_batch_size=24)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(tmp_path, [callback, counter], max_epochs=6, num_sanity_val_steps=0)
    said = [str(w.message) for w in seen if "GradCAMCallback" in str(w.message)]
    assert said[0].startswith("GradCAMCallback skipped the run at epoch 0 (step 6): writing "
                              "failed with OSError: [Errno 28] No space left on device")
    assert said[1].startswith("GradCAMCallback switched itself off after 3 failed runs")
    assert callback.switched_off and len(callback.failures) == 3
    # each of the first three runs: the statistics' pass and the shown samples' pass
    assert counter.per_run == [2, 2, 2, 0, 0, 0]


def failing_statistics(monkeypatch, error: Exception):
    def run(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(StatisticsRunner, "run", run)


def test_5_the_statistics_fail_under_the_one_policy_reported_in_every_fit(
        tmp_path, monkeypatch):
    failing_statistics(monkeypatch, RuntimeError("the statistics broke"))
    callback = GradCAMCallback("features", num_samples=2)
    for attempt in range(2):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fit(tmp_path / str(attempt), [callback], max_epochs=4, num_sanity_val_steps=0)
        said = [str(w.message) for w in seen if "the statistics broke" in str(w.message)]
        assert said and "computing the statistics failed" in said[0] and "Fix:" in said[0]
        assert callback.switched_off and len(callback.failures) == 3
        assert all(f.step == "computing the statistics" for f in callback.failures)


def test_6_out_of_memory_in_the_statistics_names_metric_batch_size(tmp_path, monkeypatch):
    failing_statistics(monkeypatch, torch.OutOfMemoryError("out of memory (simulated)"))
    callback = GradCAMCallback("features", num_samples=2, metric_batch_size=16)
    with pytest.warns(UserWarning, match=r"skipped the run at epoch 0 \(step 6\): computing "
                                         r"the statistics failed with OutOfMemoryError.*Fix: "
                                         r"lower metric_batch_size= \(now 16\)"):
        fit(tmp_path, [callback], max_epochs=1, num_sanity_val_steps=0)
    (failure,) = callback.failures
    assert failure.cause == "out of memory"
    assert failure.fix == "lower metric_batch_size= (now 16) or metric_samples"


def test_8_an_empty_std_is_named_as_std():
    with pytest.raises(ValueError, match=r"^std=\[\]: give one value per input channel"):
        GradCAMCallback(mean=[0.5] * 3, std=[])
    with pytest.raises(ValueError, match=r"^mean=\[\]: give one value per input channel"):
        GradCAMCallback(mean=[], std=[0.5] * 3)


# ----- every_n_steps ------------------------------------------------------------------------
# StripeData: 96 training samples in batches of 16, so 6 steps an epoch.


def test_every_n_steps_logs_between_validation_runs_and_a_step_once(tmp_path):
    callback = GradCAMCallback("features", num_samples=2, every_n_steps=4, metric_samples=24)
    trainer = fit(tmp_path, [callback], max_epochs=2, num_sanity_val_steps=0)
    # steps 4, 8, 12 from training; validation at 6 and 12 (12 only once)
    assert image_steps(trainer) == [4, 6, 8, 12]
    found = events(trainer)
    scalar = [e.step for e in found.Scalars("gradcam/features/border_lift")]
    assert scalar == [4, 6, 8, 12]
    assert callback.history.steps == [4, 6, 8, 12]
    assert "gradcam/features/border_lift" in trainer.callback_metrics


def test_every_n_steps_combines_with_every_n_epochs_and_titles_the_filmstrip_by_step(tmp_path):
    callback = GradCAMCallback("features", num_samples=2, every_n_steps=5, every_n_epochs=2,
                               metric_samples=0)
    trainer = fit(tmp_path, [callback], max_epochs=2, num_sanity_val_steps=0)
    assert image_steps(trainer) == [5, 10, 12]  # the epoch-0 validation is left out
    assert callback.history.epochs == [0, 1, 1]
    assert image_steps(trainer, "gradcam/features/filmstrip") == [12]


def test_every_n_steps_is_checked_like_the_other_options():
    with pytest.raises(ValueError, match=r"^every_n_steps=0: must be an int >= 1 or None"):
        GradCAMCallback(every_n_steps=0)
    with pytest.raises(TypeError, match=r"^every_n_steps=2.5: must be an int >= 1 or None"):
        GradCAMCallback(every_n_steps=2.5)


def test_every_n_steps_with_gradient_accumulation_and_a_resume_explains_each_step_once(
        tmp_path):
    """3 optimizer steps an epoch (6 batches, 2 accumulated): every_n_steps=3 falls on the
    last step of each epoch, with the validation run. After a resume at step 3, the first
    micro-batches of epoch 1 still show step 3: not explained again."""
    first = GradCAMCallback("features", num_samples=2, every_n_steps=3, metric_samples=0)
    trainer = fit(tmp_path, [first], max_epochs=1, accumulate_grad_batches=2,
                  num_sanity_val_steps=0)
    assert first.history.steps == [3]
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = GradCAMCallback("features", num_samples=2, every_n_steps=3, metric_samples=0)
    seed_everything(0)
    trainer = Trainer(max_epochs=2, callbacks=[resumed], default_root_dir=tmp_path,
                      logger=TensorBoardLogger(tmp_path, name="resumed"),
                      accumulate_grad_batches=2, num_sanity_val_steps=0, **QUIET)
    trainer.fit(LitTiny(), StripeData(), ckpt_path=tmp_path / "run.ckpt")
    assert resumed.history.steps == [3, 6]
    assert image_steps(trainer) == [6]


def test_every_n_steps_without_a_validation_loop_explains_nothing_and_fails_nothing(tmp_path):
    callback = GradCAMCallback("features", num_samples=2, every_n_steps=2)
    with pytest.warns(UserWarning, match="no validation loop"):
        fit(tmp_path, [callback], max_epochs=1, limit_val_batches=0)
    assert callback.failures == () and len(callback.history) == 0


def test_reading_an_option_gives_a_copy_and_new_picture_options_take_new_sinks():
    callback = GradCAMCallback("features", alarms={"border_lift": ">2"}, mean=[0.5],
                               std=[0.25])
    callback.alarms["lift/x"] = ">1"  # a copy: the option is unchanged, now and later
    callback.mean.append(0.1)
    callback.num_samples = 4
    assert callback.alarms == {"border_lift": ">2"} and callback.mean == [0.5]
    assert [a.metric for a in callback.options.statistics.alarms] == ["border_lift"]


class LateMasks(MaskedStripes):
    """``box_mask`` empty for the first 8 samples only."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["box_mask"] = torch.zeros(32, 32, dtype=torch.bool)
        if index >= 8:
            item["box_mask"][4:12, 4:12] = True
        return item


class LateMaskData(MaskedData):
    def val_dataloader(self):
        return DataLoader(LateMasks(), batch_size=6)


def test_a_scalar_undefined_in_the_first_chunk_only_passes_the_check_of_its_monitors(
        tmp_path):
    """The check before training measures the first metric_batch_size samples: a mask
    empty in those but not in the rest is no reason to refuse a monitor of its lift."""
    from lightning.pytorch.callbacks import EarlyStopping

    callback = GradCAMCallback("features", num_samples=2, metric_samples=12,
                               metric_batch_size=8)
    monitor = EarlyStopping(monitor="gradcam/features/lift/box_mask_std", mode="max")
    trainer = fit(tmp_path, [callback, monitor], data=LateMaskData(), max_epochs=1)
    assert "gradcam/features/lift/box_mask_std" in trainer.callback_metrics


def test_steps_that_fill_the_epochs_between_runs_satisfy_a_strict_monitor(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    monitor = "gradcam/features/border_lift"
    trainer = fit(tmp_path, [GradCAMCallback("features", num_samples=2, every_n_epochs=2,
                                             every_n_steps=3, metric_samples=8),
                             EarlyStopping(monitor=monitor, mode="max", patience=10)],
                  max_epochs=2)
    assert trainer.current_epoch == 2
    with pytest.raises(ValueError, match=r"every_n_epochs=2 the first run is at epoch 1"):
        fit(tmp_path / "b", [GradCAMCallback("features", every_n_epochs=2, every_n_steps=7),
                             EarlyStopping(monitor=monitor)])


@pytest.mark.slow
def test_ddp_every_n_steps_before_the_first_validation_runs_on_every_rank(tmp_path):
    """No sanity check and validation every 2nd epoch: the step runs of epoch 0 come before
    any validation loop has loaded its dataloaders, on every rank."""
    from tests.lit_helpers import run_ddp_script

    ranks = run_ddp_script("ddp_steps_script.py", tmp_path)
    assert ranks[0]["steps"] == [2, 4, 6] and ranks[1]["failures"] == ranks[0]["failures"] == 0
    assert ranks[0]["values"] == ranks[1]["values"] and ranks[0]["values"]
    assert ranks[0]["count"] == ranks[1]["count"] == 24  # both shares, at every step run
