"""Never cost the user their run: fail fast before training, survive faults after, any size,
any resume (issue 11). Faults are injected: a file where the image folder should be, a full
disk (/dev/full), a sink without permission, a forward that raises once, NaN outputs."""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gradcam_callback import GradCAMCallback
from gradcam_callback.guard import RunGuard, describe_failure
from gradcam_callback.history import STATE_VERSION, History
from gradcam_callback.lightning import sinks
from gradcam_callback.render.pages import (
    check_picture_size,
    page_slices,
    page_tags,
    samples_per_page,
)
from tests.lit_helpers import LitTiny, ShapesData, StripeData, StripeDataset

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}
TAG = "gradcam/features/overlay"


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval|"
                                "shuffling enabled|val_dataloader).*")
        yield


class Steps(Callback):
    """Counts training and validation steps, to show when an error came."""

    def __init__(self) -> None:
        self.train = self.val = 0

    def on_train_batch_end(self, *args):
        self.train += 1

    def on_validation_batch_end(self, *args):
        self.val += 1

    def on_test_batch_end(self, *args):
        self.val += 1


def fit(tmp_path, callbacks, max_epochs=2, data=None, model=None, logger=True, ckpt=None,
        **trainer_kwargs):
    seed_everything(0)
    model = model() if isinstance(model, type) else (model or LitTiny())
    if logger is True:
        logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = Trainer(max_epochs=max_epochs, logger=logger, callbacks=callbacks,
                      default_root_dir=tmp_path, **QUIET, **trainer_kwargs)
    trainer.fit(model, data or StripeData(), ckpt_path=ckpt)
    return trainer, model


def images(trainer, tag=TAG):
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    return events.Images(tag) if tag in events.Tags()["images"] else []


def image_tags(trainer):
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    return sorted(events.Tags()["images"])


def decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def gradcam_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "GradCAMCallback" in str(w.message)]


# ---------------------------------------------------------------------------------------
# 1. Fail fast: data-dependent errors before the first training step


class TupleOutput(LitTiny):
    def forward(self, x):
        return super().forward(x), x.mean()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x)[0], y)

    def validation_step(self, batch, batch_idx):
        pass


class SoftLabels(Dataset):
    """Label-smoothed one-hot rows: neither class indices nor 0/1 multi-hot labels."""

    def __init__(self) -> None:
        self.base = StripeDataset(24, seed=2)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        return image, nn.functional.one_hot(label, 3).float() * 0.9 + 0.1 / 3


def soft_label_data():
    data = StripeData()
    data.val_dataloader = lambda: DataLoader(SoftLabels(), batch_size=8)
    return data


class NoValidationLoss(LitTiny):
    def validation_step(self, batch, batch_idx):
        pass


FAIL_FAST = {
    "sample_indices beyond the dataset": (
        {"sample_indices": [0, 99]}, {}, ValueError,
        r"sample_indices: index 99 is beyond the validate dataset of 24 samples"),
    "target=5 with 3 classes": (
        {"target": 5}, {}, ValueError, r"target class 5 is out of range .* 3 outputs"),
    "mean/std with the wrong channel count": (
        {"mean": [0.5] * 3, "std": [0.2] * 3},
        {"model": LitTiny(channels=1), "data": StripeData(channels=1)}, ValueError,
        r"mean=\[0.5, 0.5, 0.5\], std=.*the inputs have 1 channels"),
    "dataloader_idx out of range": (
        {"dataloader_idx": 3}, {}, ValueError, r"dataloader_idx=3: there is 1 validate"),
    "a tuple output without output_transform": (
        {}, {"model": TupleOutput()}, TypeError, r"returned a tuple.*output_transform="),
    "mask_fn returning a list": (
        {"mask_fn": lambda batch: [batch]}, {"data": ShapesData()}, ValueError,
        r"mask_fn must return a dict"),
    "mask_fn returning a mask of the wrong size": (
        {"mask_fn": lambda batch: {"left": torch.ones(3, 32, 32)}}, {"data": ShapesData()},
        ValueError, r"mask 'left' must be \(N, H, W\) with N = 8, the rank of the inputs "
        r"\(8, 3, 32, 32\), got \(3, 32, 32\)"),
    "a mask_fn that fits the shown samples only (the statistics read more)": (
        {"mask_fn": lambda batch: {"left": torch.ones(8, 32, 32, dtype=torch.bool)},
         "metric_samples": 16}, {"data": ShapesData(n_val=24)}, ValueError,
        r"mask 'left' must be \(N, H, W\) with N = 16, the rank of the inputs "
        r"\(16, 3, 32, 32\), got \(8, 32, 32\)"),
    "batch_to_input returning the labels": (
        {"batch_to_input": lambda batch: batch[1]}, {}, ValueError,
        r"images \(N, C, H, W\) or volumes \(N, C, D, H, W\), but batch_to_input "
        r"returned \(8,\)"),
    "batch_to_input returning three things": (
        {"batch_to_input": lambda batch: (*batch, batch[1])}, {}, ValueError,
        r"batch_to_input must return inputs or \(inputs, labels\), got a tuple of 3"),
    "a callable target returning (N, C)": (
        {"target": lambda logits: logits}, {}, ValueError,
        r"targets callable must return a tensor of shape \(N,\) = \(8,\).*got \(8, 3\)"),
    "target='label' with soft float labels": (
        {"target": "label"}, {"data": soft_label_data(), "model": NoValidationLoss()},
        ValueError, r"needs class-index labels .* but the labels are torch.float32 "
                    r"\(8, 3\) \(soft labels"),
    "an unknown input_key": (
        {"input_key": "img"}, {"data": ShapesData()}, ValueError,
        r"input_key='img': the batch is a dict with keys"),
}


@pytest.mark.parametrize("case", list(FAIL_FAST), ids=list(FAIL_FAST))
def test_data_dependent_errors_come_before_the_first_training_step(tmp_path, case):
    options, fit_kwargs, error, pattern = FAIL_FAST[case]
    steps = Steps()
    with pytest.raises(error, match=pattern) as raised:
        fit(tmp_path, [steps, GradCAMCallback("features", num_samples=8, **options)],
            num_sanity_val_steps=0, **fit_kwargs)
    assert steps.train == 0 and steps.val == 0
    if hasattr(raised.value, "add_note"):  # Python 3.11+: where it came from
        assert "check of its options" in "".join(getattr(raised.value, "__notes__", []))


def test_the_check_also_runs_after_a_sanity_check_and_before_training(tmp_path):
    steps = Steps()
    with pytest.raises(ValueError, match="target class 5 is out of range"):
        fit(tmp_path, [steps, GradCAMCallback("features", target=5)], num_sanity_val_steps=2)
    assert steps.train == 0 and steps.val == 2  # the sanity check ran, no training step


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_the_check_runs_before_validate_and_test_batches(tmp_path, stage):
    steps = Steps()
    trainer = Trainer(logger=False, callbacks=[steps, GradCAMCallback("features", target=5)],
                      default_root_dir=tmp_path, **QUIET)
    with pytest.raises(ValueError, match="target class 5 is out of range"):
        getattr(trainer, stage)(LitTiny(), StripeData())
    assert steps.val == 0


class MaskedSet(Dataset):
    """Dict samples with a padding mask (L,) and a segmentation mask (1, H, W)."""

    def __init__(self) -> None:
        self.base = StripeDataset(24, seed=3)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        return {"image": image, "label": label, "padding_mask": torch.ones(7),
                "stripe_mask": (image[:1] > 0).float()}


def test_mask_keys_that_are_not_masks_are_skipped_with_one_warning_and_n1hw_is_squeezed(
        tmp_path):
    data = StripeData(as_dict=True)
    data.val_dataloader = lambda: DataLoader(MaskedSet(), batch_size=8)
    callback = GradCAMCallback("features", num_samples=4)
    with pytest.warns(UserWarning) as record:
        trainer, _ = fit(tmp_path, [callback], max_epochs=2, data=data)
    skipped = [m for m in gradcam_warnings(record) if "padding_mask" in m]
    assert len(skipped) == 1 and ("must be (N, H, W) with N = 4, the rank of the inputs "
                                  "(4, 3, 32, 32), got (4, 7)") in skipped[0]
    masks = callback.samples.masks
    assert list(masks) == ["stripe_mask"] and masks["stripe_mask"].shape == (4, 32, 32)
    expected = torch.stack([MaskedSet()[i]["image"][0] > 0 for i in range(4)])
    assert torch.equal(masks["stripe_mask"], expected)
    energy = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    energy.Reload()
    assert "gradcam/features/energy_in_mask/stripe_mask" in energy.Tags()["scalars"]


def test_soft_masks_use_one_threshold_of_one_half():
    from gradcam_callback.metrics import energy_in_mask
    from gradcam_callback.samples import MASK_THRESHOLD, SampleReader

    soft = torch.tensor([[[0.2, 0.5], [0.51, 1.0]]])
    batch = {"image": torch.zeros(1, 3, 2, 2), "soft_mask": soft}
    mask = SampleReader().masks(batch, batch["image"])["soft_mask"]
    assert MASK_THRESHOLD == 0.5
    assert mask.tolist() == [[[False, False], [True, True]]]
    cams = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert energy_in_mask(cams, soft).item() == energy_in_mask(cams, mask).item()
    assert energy_in_mask(cams, mask).item() == pytest.approx(7 / 10)


# ---------------------------------------------------------------------------------------
# 2. After that, never stop training


def test_a_file_in_place_of_the_image_folder_is_reported_once_and_training_goes_on(tmp_path):
    blocker = tmp_path / "pictures"
    blocker.write_text("not a folder")
    # metric_samples=0: no class-maps picture, so the writes counted are grids and filmstrip
    callback = GradCAMCallback("features", num_samples=2, image_dir=str(blocker),
                               metric_samples=0)
    with pytest.warns(UserWarning) as record:
        trainer, _ = fit(tmp_path, [callback], max_epochs=2)
    assert trainer.current_epoch == 2  # trained to the end
    reports = [m for m in gradcam_warnings(record) if "skipped" in m]
    assert len(reports) == 1
    assert "FileExistsError" in reports[0] and "in the way" in reports[0]
    assert "choose another image_dir=" in reports[0]
    assert [e.step for e in images(trainer)] == [6, 12]  # TensorBoard got its pictures
    assert blocker.read_text() == "not a folder"
    assert [f.step for f in callback.failures] == ["writing"] * 3  # 2 grids + filmstrip
    assert callback.switched_off


def test_a_full_disk_switches_the_callback_off_after_three_failed_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks.FileSink, "path_for", lambda self, tag, step: Path("/dev/full"))
    callback = GradCAMCallback("features", num_samples=2, image_dir=str(tmp_path / "files"),
                               metric_samples=0)  # failures counted: one per grid write
    with pytest.warns(UserWarning) as record:
        trainer, _ = fit(tmp_path, [callback], max_epochs=5)
    assert trainer.current_epoch == 5
    messages = gradcam_warnings(record)
    assert sum("skipped" in m for m in messages) == 1  # the same failure is reported once
    assert any("the disk is full" in m and "Errno 28" in m for m in messages)
    off = [m for m in messages if "switched itself off" in m]
    assert len(off) == 1 and "after 3 failed runs in a row" in off[0]
    # TensorBoard (first sink) got epochs 0-2; then the callback was off: no 4th, 5th grid
    assert [e.step for e in images(trainer)] == [6, 12, 18]
    assert len(callback.failures) == 3 and callback.switched_off


def test_no_permission_is_reported_with_its_fix(tmp_path, monkeypatch):
    def refuse(self, tag, picture, step, caption=""):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.directory))

    monkeypatch.setattr(sinks.FileSink, "log_image", refuse)
    callback = GradCAMCallback("features", num_samples=2, image_dir=str(tmp_path / "ro"))
    with pytest.warns(UserWarning, match=r"no permission to write to .*ro.*make it writable"):
        trainer, _ = fit(tmp_path, [callback], max_epochs=1)
    assert trainer.current_epoch == 1


class RaisesOnce(LitTiny):
    """The forward raises in the CAM pass of the first validation run (not in training)."""

    def __init__(self) -> None:
        super().__init__()
        self.cam_calls = 0

    def forward(self, x):
        if not self.training and not torch.is_grad_enabled() and len(x) == 3:
            self.cam_calls += 1
            if self.cam_calls == 2:  # the first call is the check before training
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().forward(x)


def test_a_forward_that_raises_once_skips_one_run_and_the_next_runs_log(tmp_path):
    callback = GradCAMCallback("features", num_samples=3, faithfulness_samples=0,
                               sanity_layers=0)  # (their forwards are counted apart)
    with pytest.warns(UserWarning, match=r"skipped the run at epoch 0 \(step 6\): explaining "
                      r"failed with RuntimeError: CUDA error.*model's forward"):
        trainer, model = fit(tmp_path, [callback], max_epochs=3, model=RaisesOnce)
    assert model.cam_calls == 4
    assert [e.step for e in images(trainer)] == [12, 18]
    assert callback.history.epochs == [1, 2] and not callback.switched_off


class TurnsNaN(LitTiny):
    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if self.current_epoch == 1 and not self.training else out


def test_nan_outputs_are_named_once_left_out_and_the_run_goes_on(tmp_path):
    callback = GradCAMCallback("features", num_samples=2)
    with pytest.warns(UserWarning, match=r"outputs for samples \[0, 1, .* are NaN or infinite"
                                         r".*has training diverged"):
        trainer, _ = fit(tmp_path, [callback], max_epochs=3, model=TurnsNaN,
                         num_sanity_val_steps=0)
    assert [e.step for e in images(trainer)] == [6, 12, 18]  # the NaN run is shown too
    assert callback.history.epochs == [0, 2]  # no zero maps from the NaN run in the history
    assert callback.failures == () and not callback.switched_off
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if "gradcam" in k}
    assert metrics and all(np.isfinite(v) for v in metrics.values())


class NaNWhenEvaluated(LitTiny):
    """Trains normally; every forward outside training (validation, the CAM) is NaN."""

    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if not self.training else out


def test_a_model_nan_from_the_start_trains_to_the_end_with_one_warning(tmp_path):
    """The check before training warns instead of refusing to start: Lightning itself
    trains such a model, and the observer is never stricter than the trainer."""
    callback = GradCAMCallback("features", num_samples=2, metric_samples=8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, [callback], max_epochs=2, model=NaNWhenEvaluated,
                         num_sanity_val_steps=0)
    assert trainer.state.finished and trainer.current_epoch == 2
    said = [str(w.message) for w in seen if "NaN or infinite" in str(w.message)]
    assert len(said) == 1 and "samples [0, 1] are" in said[0]  # the check names them
    assert callback.failures == () and len(images(trainer)) == 2
    assert callback.history.epochs == []  # nothing finite to remember
    published = {k: float(v) for k, v in trainer.callback_metrics.items() if "gradcam" in k}
    assert published == {"gradcam/features/metric_samples": 0.0}  # no scalar, no NaN


def failing_filmstrip(monkeypatch):
    original = sinks.TensorBoardSink.log_image

    def log_image(self, tag, picture, step, caption=""):
        if "filmstrip" in tag:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tag, picture, step, caption)

    monkeypatch.setattr(sinks.TensorBoardSink, "log_image", log_image)


def test_nothing_raises_out_of_on_fit_end(tmp_path, monkeypatch):
    failing_filmstrip(monkeypatch)
    callback = GradCAMCallback("features", num_samples=2)
    with pytest.warns(UserWarning, match=r"skipped the filmstrip at the end of fit"):
        trainer, _ = fit(tmp_path, [callback], max_epochs=2)
    assert trainer.state.finished
    assert [e.step for e in images(trainer)] == [6, 12]


def test_on_error_raise_opts_back_in(tmp_path, monkeypatch):
    failing_filmstrip(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        fit(tmp_path, [GradCAMCallback("features", num_samples=2, on_error="raise")])
    blocker = tmp_path / "file"
    blocker.write_text("")
    steps = Steps()
    with pytest.raises(FileExistsError):
        fit(tmp_path / "b", [steps, GradCAMCallback("features", image_dir=str(blocker),
                                                    on_error="raise")])
    assert steps.train == 6  # the first run's write raised


def test_training_after_faults_is_bit_identical_to_training_without_the_callback(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    common = {"max_epochs": 3, "deterministic": True, "num_sanity_val_steps": 0}
    _, plain = fit(tmp_path / "plain", [], **common)
    callbacks = [GradCAMCallback("features", target="both", image_dir=str(blocker)),
                 GradCAMCallback("features.0", num_samples=3)]
    with pytest.warns(UserWarning) as record:
        _, watched = fit(tmp_path / "watched", callbacks, model=RaisesOnce, **common)
    reports = gradcam_warnings(record)
    assert any("in the way" in m for m in reports) and any("CUDA error" in m for m in reports)
    assert callbacks[0].switched_off and len(callbacks[1].failures) == 1
    for key, value in plain.state_dict().items():
        assert torch.equal(value, watched.state_dict()[key]), key


def test_failure_descriptions_name_cause_and_fix():
    cases = {
        OSError(errno.ENOSPC, "No space left on device", "/x"): "the disk is full writing to /x",
        FileExistsError(errno.EEXIST, "File exists", "/d"): "in the way at /d",
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/d/f"): "in the way",
        PermissionError(errno.EROFS, "Read-only file system", "/r"): "no permission",
        MemoryError(): "out of memory",
    }
    for error, cause in cases.items():
        assert cause in describe_failure(error, "writing")[0]
    cause, fix = describe_failure(MemoryError(), "explaining", batch_size=32,
                                  metric_batch_size=64)
    assert fix.startswith("lower batch_size= (now 32)") and "metric_batch_size" not in fix
    cause, fix = describe_failure(MemoryError(), "computing the statistics", batch_size=32,
                                  metric_batch_size=64)
    assert cause == "out of memory"
    assert fix == "lower metric_batch_size= (now 64) or metric_samples"
    assert "model's forward" in describe_failure(RuntimeError("x"), "explaining")[0]


def test_the_guard_counts_failures_in_a_row_and_a_success_resets_them():
    messages = []
    guard = RunGuard("warn", messages.append, max_failures=3)

    def run(fail):
        with guard.attempt("a run") as attempt:
            attempt.step = "writing"
            if fail:
                raise OSError(errno.ENOSPC, "full")
        return attempt.failed

    assert [run(f) for f in (True, True, False, True, True)] == [True, True, False, True, True]
    assert guard.active and guard.consecutive == 2 and len(messages) == 1
    run(True)
    assert not guard.active and "switched itself off" in messages[-1]
    with pytest.raises(KeyboardInterrupt), guard.attempt("interrupted"):
        raise KeyboardInterrupt  # never swallowed
    guard.reset()
    assert guard.active and not guard.failures


# ---------------------------------------------------------------------------------------
# 3. Any size: chunks and pages


class BatchSpy(LitTiny):
    """Records the batch sizes of eval-mode forwards (validation batches are 16 and 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.cam_batches = []

    def forward(self, x):
        if not self.training and len(x) not in (16, 8):
            self.cam_batches.append(len(x))
        return super().forward(x)


def test_cams_are_computed_in_chunks_of_batch_size(tmp_path):
    model = BatchSpy()
    # metric_samples=0: the statistics' own forwards (metric_batch_size) are not counted here
    chunked = GradCAMCallback("features", num_samples=10, batch_size=4, metric_samples=0,
                              sanity_layers=0)
    whole = GradCAMCallback("features.4", num_samples=10, batch_size=32, metric_samples=0,
                            sanity_layers=0)
    fit(tmp_path, [chunked, whole], max_epochs=1, model=model, num_sanity_val_steps=0)
    # chunked: check before training + the run; whole: the same, one forward each
    assert sorted(model.cam_batches) == sorted([4, 4, 2, 10] * 2)


def test_pages_split_samples_under_the_limits():
    assert page_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert page_tags("t", 1) == ["t"] and page_tags("t", 2) == ["t/page_1", "t/page_2"]
    assert samples_per_page(16, 256) == 16
    fits = samples_per_page(10_000, 256)
    assert fits * (256 + 12) + 400 <= 65_500 < (fits + 1) * (256 + 12) + 400
    with pytest.raises(ValueError, match=r"70000 x 10 px, but JPEG allows at most 65,500"):
        check_picture_size(10, 70_000, "jpeg", "the grid", "lower max_image_size")


def test_more_samples_than_a_page_are_logged_as_pages(tmp_path):
    # metric_samples=0: no class-maps picture among the tags counted
    callback = GradCAMCallback("features", num_samples=5, samples_per_page=2, metric_samples=0)
    trainer, _ = fit(tmp_path, [callback], max_epochs=1)
    tags = image_tags(trainer)
    assert tags == [f"gradcam/features/filmstrip/page_{k}" for k in (1, 2, 3)] + [
        f"{TAG}/page_{k}" for k in (1, 2, 3)]
    widths = [images(trainer, f"{TAG}/page_{k}")[0].width for k in (1, 2, 3)]
    column = widths[0] - widths[2]  # pages 1 and 2 hold 2 columns, page 3 one
    assert widths[0] == widths[1] and column >= 128
    single = GradCAMCallback("features", num_samples=2, metric_samples=0)
    trainer, _ = fit(tmp_path / "one", [single], max_epochs=1)
    assert image_tags(trainer) == ["gradcam/features/filmstrip", TAG]
    assert images(trainer)[0].width == widths[0]  # a page of 2 is the grid of 2


@pytest.mark.slow
def test_512_samples_train_and_log_in_pages_under_jpegs_limit(tmp_path):
    callback = GradCAMCallback("features", num_samples=512, batch_size=64)
    data = StripeData(n_train=32, n_val=512, batch_size=128)
    trainer, _ = fit(tmp_path, [callback], max_epochs=1, data=data)
    pages = [f"{TAG}/page_{k}" for k in range(1, 33)]
    assert [t for t in image_tags(trainer) if t.startswith(TAG)] == sorted(pages)
    first, last = images(trainer, pages[0])[0], images(trainer, pages[-1])[0]
    assert first.width == last.width <= 65_500
    assert decode(last).std() > 20
    assert callback.history.maps.shape == (1, 512, 32, 32)
    assert not callback.failures


# ---------------------------------------------------------------------------------------
# 4. Resume and reuse


class Resized(StripeData):
    """Validation images at another size (the images were resized between runs)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def val_dataloader(self):
        images = nn.functional.interpolate(
            torch.stack([self.val_set[i][0] for i in range(len(self.val_set))]),
            size=self.size, mode="bilinear")
        return DataLoader(list(zip(images, self.val_set.labels, strict=True)), batch_size=8)


def test_a_history_of_16px_maps_resumes_with_24px_images(tmp_path):
    first = GradCAMCallback("features", num_samples=4)
    trainer, _ = fit(tmp_path, [first], max_epochs=2, data=Resized(16))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = first.history.maps
    resumed = GradCAMCallback("features", num_samples=4)
    fit(tmp_path, [resumed], max_epochs=3, data=Resized(24), ckpt=tmp_path / "run.ckpt")
    assert resumed.history.epochs == [0, 1, 2]
    maps = resumed.history.maps
    assert maps.shape == (3, 4, 24, 24)
    expected = nn.functional.interpolate(saved, size=(24, 24), mode="bilinear",
                                         align_corners=False)
    assert torch.allclose(maps[:2], expected.half().float(), atol=2e-3)


def test_changed_sample_options_win_over_the_checkpoint_with_one_warning(tmp_path):
    first = GradCAMCallback("features", sample_indices=[3, 1])
    trainer, _ = fit(tmp_path, [first], max_epochs=1)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = GradCAMCallback("features", num_samples=3)
    with pytest.warns(UserWarning) as record:
        fit(tmp_path, [resumed], max_epochs=2, ckpt=tmp_path / "run.ckpt")
    changed = [m for m in gradcam_warnings(record) if "options changed" in m]
    assert len(changed) == 1
    assert "num_samples=8 -> 3" in changed[0] and "sample_indices=[3, 1] -> None" in changed[0]
    assert resumed.samples.indices == [0, 1, 2]
    assert resumed.history.epochs == [1]  # a new history: other samples

    same = GradCAMCallback("features", sample_indices=[3, 1])
    fit(tmp_path / "same", [same], max_epochs=2, ckpt=tmp_path / "run.ckpt")
    assert same.samples.indices == [3, 1] and same.history.epochs == [0, 1]


def test_restored_indices_are_kept_when_the_options_did_not_change(tmp_path):
    first = GradCAMCallback("features", num_samples=8)
    trainer, _ = fit(tmp_path, [first], max_epochs=1, data=StripeData(n_val=5))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    resumed = GradCAMCallback("features", num_samples=8)
    fit(tmp_path, [resumed], max_epochs=2, data=StripeData(n_val=24), ckpt=tmp_path / "run.ckpt")
    assert resumed.samples.indices == [0, 1, 2, 3, 4]  # the samples shown before the resume
    assert resumed.history.epochs == [0, 1]


def test_the_state_is_versioned_and_old_states_load():
    callback = GradCAMCallback("features", num_samples=2)
    state = callback.state_dict()
    assert state["version"] == STATE_VERSION == 3
    assert state["sample_options"] == {"num_samples": 2, "dataloader_idx": 0,
                                       "sample_indices": None}
    maps = torch.rand(2, 2, 8, 8).half()
    old = {"layer_name": "features", "sample_indices": [0, 1], "history_epochs": [0, 1],
           "history_steps": [6, 12], "history_maps": maps}  # 0.1's keys
    callback.load_state_dict(old)
    assert callback.history.epochs == [0, 1] and torch.equal(callback.history.maps,
                                                             maps.float())
    with pytest.warns(UserWarning, match=r"history is inconsistent.*starting a new"):
        callback.load_state_dict({"epochs": [0], "steps": [1, 2], "maps": maps})
    assert len(callback.history) == 0


def test_history_resizes_maps_of_another_size_and_restarts_for_another_count():
    history = History()
    history.add(torch.rand(2, 16, 16), 0, 1)
    drift = history.add(torch.rand(2, 24, 24), 1, 2)
    assert history.maps.shape == (2, 2, 24, 24) and set(drift) == {"drift", "drift_from_start"}
    assert history.add(torch.rand(3, 24, 24), 2, 3) == {} and history.epochs == [2]


def test_a_reused_callback_starts_a_new_history_and_shows_the_new_data(tmp_path):
    callback = GradCAMCallback("features", num_samples=2)
    fit(tmp_path / "a", [callback], max_epochs=2)
    other = StripeData()
    other.val_set = StripeDataset(24, seed=42)
    fit(tmp_path / "b", [callback], max_epochs=1, data=other)
    assert callback.history.epochs == [0] and len(callback.history) == 1
    assert torch.equal(callback.samples.inputs, torch.stack([other.val_set[i][0]
                                                             for i in range(2)]))


def test_reloaded_dataloaders_refresh_the_samples(tmp_path):
    class Growing(StripeData):
        def val_dataloader(self):
            seed = 100 + self.trainer.current_epoch
            return DataLoader(StripeDataset(24, seed=seed), batch_size=8)

    callback = GradCAMCallback("features", num_samples=2)
    seen = []
    spy = Callback()
    spy.on_validation_epoch_end = lambda trainer, module: seen.append(
        callback.samples.inputs.clone())
    fit(tmp_path, [callback, spy], max_epochs=3, data=Growing(),
        reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0)
    for epoch, inputs in enumerate(seen):
        expected = StripeDataset(24, seed=100 + epoch)
        assert torch.equal(inputs, torch.stack([expected[0][0], expected[1][0]])), epoch


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_target_both_with_validate_or_test_alone(tmp_path, stage):
    callback = GradCAMCallback("features", num_samples=3, target="both")
    trainer = Trainer(logger=TensorBoardLogger(tmp_path, name="tb"), callbacks=[callback],
                      **QUIET)
    getattr(trainer, stage)(LitTiny(), StripeData())
    tag = TAG if stage == "validate" else "gradcam/features/test/overlay"
    picture = decode(images(trainer, tag)[0])
    assert picture.std() > 20 and not callback.failures


def test_validate_after_fit_reads_the_new_data_not_fits(tmp_path):
    callback = GradCAMCallback("features", num_samples=2)
    trainer, model = fit(tmp_path, [callback], max_epochs=1)
    other = StripeData()
    other.val_set = StripeDataset(24, seed=77)
    trainer.validate(model, other)
    assert torch.equal(callback.samples.inputs, torch.stack([other.val_set[i][0]
                                                             for i in range(2)]))


def test_a_fit_after_validate_checks_the_fits_data_not_the_earlier_validates(tmp_path):
    callback = GradCAMCallback("features", num_samples=2)
    trainer = Trainer(max_epochs=1, logger=False, callbacks=[callback],
                      num_sanity_val_steps=0, enable_checkpointing=False,
                      default_root_dir=tmp_path, **QUIET)  # its pictures: not into the cwd
    other = StripeData()
    other.val_set = StripeDataset(24, seed=55)
    trainer.validate(LitTiny(), other)
    seen = []
    spy = Callback()
    spy.on_train_batch_start = lambda trainer, module, batch, index: seen.append(
        callback.samples.inputs.clone())
    trainer.callbacks.append(spy)
    data = StripeData()
    trainer.fit(LitTiny(), data)
    assert torch.equal(seen[0], torch.stack([data.val_set[i][0] for i in range(2)]))


# ---------------------------------------------------------------------------------------
# 5. Files only in the run's own place


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_pictures_go_only_to_the_runs_own_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="no logger takes pictures"):
        fit(tmp_path / "dev", [GradCAMCallback("features")],
            logger=TensorBoardLogger(tmp_path / "dev", name="tb"), fast_dev_run=True)
    assert files_under(tmp_path) == []  # fast_dev_run: loggers off, nothing written
    fit(tmp_path / "off", [GradCAMCallback("features")], logger=False,
        enable_checkpointing=False, max_epochs=1)
    written = files_under(tmp_path)  # logger=False: the run's own folder under its root
    assert written and all(name.startswith("off/gradcam/version_0/") for name in written)
    for name in written:
        (tmp_path / name).unlink()
    asked = tmp_path / "asked"
    fit(tmp_path / "off2", [GradCAMCallback("features", image_dir=str(asked))], logger=False,
        enable_checkpointing=False, max_epochs=1)
    written = files_under(tmp_path)
    assert written and all(name.startswith("asked/") for name in written)
    assert any("overlay" in name for name in written)


def test_no_validation_loop_warns_and_fit_goes_on(tmp_path):
    steps = Steps()
    with pytest.warns(UserWarning, match="no validation loop"):
        fit(tmp_path, [steps, GradCAMCallback("features")], max_epochs=1,
            limit_val_batches=0)
    assert steps.train == 6


def test_the_check_before_training_draws_no_random_number(tmp_path):
    class RNGSpy(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0 and trainer.current_epoch == 0:
                self.first = torch.get_rng_state()

    with_callback, without = RNGSpy(), RNGSpy()
    fit(tmp_path / "a", [with_callback, GradCAMCallback("features", num_samples=3)],
        max_epochs=1, num_sanity_val_steps=0)
    fit(tmp_path / "b", [without], max_epochs=1, num_sanity_val_steps=0)
    assert torch.equal(with_callback.first, without.first)


# ---------------------------------------------------------------------------------------
# DDP: rank zero checks and explains alone; a fault there stops no rank, an error no hang

DDP_SCRIPT = '''
import sys, warnings
from pathlib import Path
sys.path.insert(0, {root!r})
from lightning.pytorch import Callback, Trainer, seed_everything
import gradcam_callback.explainer as explainer
from gradcam_callback import GradCAMCallback
from tests.lit_helpers import LitTiny, StripeData

CALLS = [0]
_explain_batch = explainer.explain_batch


def counted(*args, **kwargs):
    CALLS[0] += 1
    return _explain_batch(*args, **kwargs)


class FromTraining(Callback):
    def on_train_start(self, trainer, pl_module):
        CALLS[0] = 0  # (the check before training on rank zero, just before, not counted)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    explainer.explain_batch = counted
    out, case = Path(sys.argv[1]), sys.argv[2]
    seed_everything(0)
    options = {{"target": 5}} if case == "error" else {{"image_dir": str(out / "blocker")}}
    gradcam = GradCAMCallback("features", num_samples=4, **options)
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=5,
                      default_root_dir=out, logger=False, enable_checkpointing=False,
                      callbacks=[gradcam, FromTraining()],
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0)
    trainer.fit(LitTiny(), StripeData())
    (out / f"done_rank{{trainer.global_rank}}").write_text(
        f"{{trainer.global_step}} {{gradcam.switched_off}} {{CALLS[0]}}")
'''


@pytest.mark.slow
@pytest.mark.parametrize("case", ["fault", "error"])
def test_ddp_a_fault_on_rank_zero_stops_no_rank_and_an_error_does_not_hang(tmp_path, case):
    import subprocess
    import sys

    script = tmp_path / "ddp_faults.py"
    script.write_text(DDP_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    (tmp_path / "blocker").write_text("a file where the image folder should be")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path), case],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    if case == "fault":
        assert result.returncode == 0, result.stderr[-3000:]
        done = [(tmp_path / f"done_rank{r}").read_text().split() for r in (0, 1)]
        # both ranks trained 5 epochs; rank zero's pictures failed 3 runs in a row, so it
        # switched off, and rank one with it: after that, no rank explained anything.
        # Rank zero: 3 runs x (statistics + pictures); rank one: 3 x its statistics share.
        assert done == [["15", "True", "6"], ["15", "True", "3"]]
    else:
        assert result.returncode != 0
        assert "target class 5 is out of range" in result.stderr
        assert not (tmp_path / "done_rank0").exists()
