"""GradCAMCallback in real Trainer runs, read back from TensorBoard's event files."""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import CLASS_NAMES, LitTiny, ShapesData, StripeData, StripeDataset

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        yield


def fit(tmp_path, callbacks, max_epochs=2, data=None, model=None, logger=True, **trainer_kwargs):
    """Fit after seeding; ``model`` is a class or factory, built after the seed."""
    seed_everything(0)
    model = (model or LitTiny)()
    if logger is True:
        logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = Trainer(max_epochs=max_epochs, logger=logger, callbacks=callbacks,
                      default_root_dir=tmp_path, **QUIET, **trainer_kwargs)
    trainer.fit(model, data or StripeData())
    return trainer, model


def logged_scalars(trainer, tag):
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return {}
    return {e.step: e.value for e in events.Scalars(tag)}


def logged_images(trainer, tag):
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    if tag not in events.Tags()["images"]:
        return []
    return events.Images(tag)


def decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """One 2-epoch fit for the tests that only read what it logged (a fit costs seconds).

    Four callbacks, on four layers so that their tags differ: the layer auto-detected,
    a callable target with 64 px tiles, ``target="both"``, and ``"both"`` with heatmaps;
    two TensorBoard loggers.
    """
    tmp = tmp_path_factory.mktemp("shared")
    callbacks = SimpleNamespace(
        auto=GradCAMCallback(None, num_samples=5),
        small=GradCAMCallback("features.0", num_samples=5, max_image_size=64,
                              target=lambda logits: logits[:, 0]),
        both=GradCAMCallback("features.4", num_samples=5, target="both"),
        both_heat=GradCAMCallback("features.1", num_samples=5, target="both",
                                  show_heatmap=True),
    )
    loggers = [TensorBoardLogger(tmp, name="a"), TensorBoardLogger(tmp, name="b")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        trainer, model = fit(tmp, list(vars(callbacks).values()), logger=loggers,
                             num_sanity_val_steps=2)
    return SimpleNamespace(trainer=trainer, model=model, loggers=loggers, **vars(callbacks))


def test_logs_one_annotated_grid_per_validation_run_not_during_sanity_check(shared):
    events = logged_images(shared.trainer, "gradcam/features/overlay")
    assert [e.step for e in events] == [6, 12]  # 96 samples / 16 per batch, after each epoch
    picture = decode(events[-1])
    assert picture.shape == (events[-1].height, events[-1].width, 3)
    assert picture.shape[1] > 5 * 96  # five columns of at least 96 px
    assert picture.std() > 20


def test_the_auto_detected_layer_names_the_tag_and_is_checkpointed(shared):
    assert shared.auto.layer_name == "features"
    assert shared.auto.state_dict()["layer_name"] == "features"


def test_target_both_and_heatmaps_add_rows(shared):
    def height(layer: str) -> int:
        return logged_images(shared.trainer, f"gradcam/{layer}/overlay")[0].height

    row = height("features.4") - height("features")  # "both": one overlay row more
    assert row == 128 + 6  # a 128 px tile and its gap
    assert height("features.1") - height("features.4") == 2 * row  # a heatmap under each


def test_callable_target_and_max_image_size(shared):
    default_image = logged_images(shared.trainer, "gradcam/features/overlay")[0]
    small_image = logged_images(shared.trainer, "gradcam/features.0/overlay")[0]
    # 32 px inputs: upscaled to 128 px tiles by default, capped at 64 px here
    assert default_image.width - small_image.width == 5 * (128 - 64)


def test_every_tensorboard_logger_gets_the_grid(shared):
    for logger in shared.loggers:
        events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
        events.Reload()
        for layer in ("features", "features.0", "features.4", "features.1"):
            assert [e.step for e in events.Images(f"gradcam/{layer}/overlay")] == [6, 12]


def test_a_smaller_test_set_does_not_change_the_validation_samples(shared):
    data = StripeData()
    data.test_dataloader = lambda: DataLoader(StripeDataset(3, seed=7), batch_size=3)
    with pytest.warns(UserWarning, match="the test dataset has 3"):
        shared.trainer.test(shared.model, data)
    assert logged_images(shared.trainer, "gradcam/features/test/overlay")
    assert shared.auto.state_dict()["sample_indices"] == [0, 1, 2, 3, 4]
    assert shared.auto.samples.indices == [0, 1, 2, 3, 4]


def test_every_n_epochs(tmp_path):
    trainer, _ = fit(tmp_path, [GradCAMCallback("features", every_n_epochs=2)], max_epochs=4)
    assert [e.step for e in logged_images(trainer, "gradcam/features/overlay")] == [12, 24]


class Spy(Callback):
    """Records what the model looks like at the end of each validation run."""

    def __init__(self) -> None:
        self.seen = []

    def on_validation_epoch_end(self, trainer, pl_module):
        self.seen.append({
            "training": {n: m.training for n, m in pl_module.named_modules()},
            "grads": {n: None if p.grad is None else p.grad.clone()
                      for n, p in pl_module.named_parameters()},
            "state": {k: v.clone() for k, v in pl_module.state_dict().items()},
            "hooks": {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks))
                      for n, m in pl_module.named_modules()},
            "rng": torch.get_rng_state(),
        })


def test_model_and_process_state_are_the_same_before_and_after_the_callback(tmp_path):
    before, after = Spy(), Spy()
    fit(tmp_path, [before, GradCAMCallback("features.4", target="both"), after], max_epochs=2,
        num_sanity_val_steps=0)
    assert len(before.seen) == len(after.seen) == 2
    for b, a in zip(before.seen, after.seen, strict=True):
        assert a["training"] == b["training"]
        assert a["hooks"] == b["hooks"]
        assert torch.equal(a["rng"], b["rng"])
        for key, value in b["state"].items():
            assert torch.equal(a["state"][key], value), key
        for key, grad in b["grads"].items():
            assert (grad is None) == (a["grads"][key] is None)
            assert grad is None or torch.equal(grad, a["grads"][key])


class NoisyStripes(StripeDataset):
    """Draws from torch's, Python's and NumPy's global RNGs in ``__getitem__``, as
    augmentations do: a callback that reads samples without restoring the RNG states
    would shift every later batch."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        noise = 0.1 * torch.rand(()) + 0.1 * random.random() + 0.1 * float(np.random.rand())
        return image + noise, label


class NoisyData(StripeData):
    def __init__(self) -> None:
        super().__init__()
        self.train_set, self.val_set = NoisyStripes(96, seed=1), NoisyStripes(24, seed=2)


class DrawsOnePythonRandom(Callback):
    def on_validation_epoch_end(self, trainer, pl_module):
        random.random()


def test_training_is_bit_identical_with_and_without_the_callback(tmp_path):
    common = {"max_epochs": 2, "deterministic": True, "num_sanity_val_steps": 2,
              "data": NoisyData()}
    _, plain = fit(tmp_path / "plain", [], **common)
    _, watched = fit(tmp_path / "watched", [GradCAMCallback("features", target="both")],
                     **common)
    plain_state, watched_state = plain.state_dict(), watched.state_dict()
    assert plain_state.keys() == watched_state.keys()
    for key, value in plain_state.items():
        assert torch.equal(value, watched_state[key]), key
    # the test can fail: one Python random number drawn at validation changes the weights
    _, leaky = fit(tmp_path / "leaky", [DrawsOnePythonRandom()], **common)
    assert not torch.equal(leaky.state_dict()["head.3.weight"], plain_state["head.3.weight"])


def test_the_same_samples_every_time_whatever_the_loader_order(tmp_path):
    seen = []

    def spy_batch(batch):
        seen.append(batch[0].clone())
        return batch

    data = StripeData()
    data.val_dataloader = lambda: DataLoader(data.val_set, batch_size=16, shuffle=True)
    callback = GradCAMCallback("features", num_samples=4, batch_to_input=spy_batch,
                               metric_samples=0)  # metric samples are re-read by design
    fit(tmp_path, [callback], max_epochs=2, data=data)
    expected = torch.stack([data.val_set[i][0] for i in range(4)])
    assert len(seen) == 1  # fetched once, then reused every run
    assert torch.equal(seen[0], expected)


def test_dict_batches_and_class_names(tmp_path):
    callback = GradCAMCallback("features", num_samples=3, class_names=CLASS_NAMES,
                               input_key="image", label_key="label", target="label")
    trainer, _ = fit(tmp_path, [callback], max_epochs=1, data=StripeData(as_dict=True))
    assert logged_images(trainer, "gradcam/features/overlay")


def test_grayscale_inputs_with_mean_and_std(tmp_path):
    callback = GradCAMCallback("features", mean=[0.5], std=[0.25])
    trainer, _ = fit(tmp_path, [callback], max_epochs=1, model=lambda: LitTiny(channels=1),
                     data=StripeData(channels=1))
    picture = decode(logged_images(trainer, "gradcam/features/overlay")[0])
    assert picture.std() > 20


def test_fewer_samples_than_asked_warns_once_and_shows_what_exists(tmp_path):
    callback = GradCAMCallback("features", num_samples=8)
    with pytest.warns(UserWarning, match="asked for 8 samples, the validate dataset has 5"):
        trainer, _ = fit(tmp_path, [callback], max_epochs=2, data=StripeData(n_val=5))
    exact, _ = fit(tmp_path / "exact", [GradCAMCallback("features", num_samples=5)],
                   max_epochs=1, data=StripeData(n_val=5))
    widths = {e.width for e in logged_images(trainer, "gradcam/features/overlay")}
    assert widths == {logged_images(exact, "gradcam/features/overlay")[0].width}


def test_second_validation_dataloader(tmp_path):
    data = StripeData()
    other = StripeDataset(6, seed=9)
    data.val_dataloader = lambda: [DataLoader(data.val_set, batch_size=8),
                                   DataLoader(other, batch_size=8)]
    seen = []
    callback = GradCAMCallback("features", num_samples=2, dataloader_idx=1,
                               batch_to_input=lambda b: seen.append(b[0]) or b)
    fit(tmp_path, [callback], max_epochs=1, data=data)
    assert torch.equal(seen[0], torch.stack([other[0][0], other[1][0]]))

    bad = GradCAMCallback("features", dataloader_idx=2)
    with pytest.raises(ValueError, match=r"dataloader_idx=2.*there are 2 validate.*valid: 0\.\.1"):
        fit(tmp_path / "bad", [bad], max_epochs=1, data=data)


def test_a_csv_logger_gets_image_files_in_its_own_run_directory_without_a_warning(tmp_path):
    callback = GradCAMCallback("features", num_samples=3)
    logger = CSVLogger(tmp_path, name="csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "nowhere to log" warning
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        fit(tmp_path, [callback], max_epochs=2, logger=logger)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")
                   if p.suffix in (".jpg", ".png", ".gif"))
    folder = "csv/version_0/gradcam/"
    assert files == [folder + "features_class_maps_step0000006.jpg",  # metric_samples default
                     folder + "features_class_maps_step0000012.jpg",
                     folder + "features_filmstrip_step0000012.jpg",
                     folder + "features_overlay_step0000006.jpg",
                     folder + "features_overlay_step0000012.jpg"]
    with Image.open(tmp_path / folder / "features_overlay_step0000012.jpg") as jpg:
        assert jpg.format == "JPEG"
        assert jpg.size == (callback.last_grid.shape[2], callback.last_grid.shape[1])
        assert np.abs(np.asarray(jpg, dtype=float) - callback.last_grid.permute(1, 2, 0).numpy()
                      ).mean() < 12  # the last grid, JPEG-encoded (noise images: ~6)


def test_no_logger_writes_pictures_into_a_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback = GradCAMCallback("features", num_samples=2, save_gif=True)
    fit(tmp_path / "run", [callback], max_epochs=2, logger=False, enable_checkpointing=False)
    folder = tmp_path / "run" / "gradcam" / "version_0"
    assert sorted(p.name for p in folder.iterdir()) == [
        "features_class_maps_step0000006.jpg", "features_class_maps_step0000012.jpg",
        "features_filmstrip_step0000012.jpg", "features_overlay_step0000006.jpg",
        "features_overlay_step0000012.jpg", "features_sample0.gif", "features_sample1.gif"]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(folder in p.parents for p in files), files  # nothing beside it, nothing in cwd


def test_fast_dev_run_writes_no_pictures_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback = GradCAMCallback("features", num_samples=2, save_gif=True)
    fit(tmp_path / "run", [callback], fast_dev_run=True)
    assert callback.last_grid is not None  # computed, just not saved
    pictures = [p for p in tmp_path.rglob("*") if p.suffix in (".png", ".jpg", ".gif")]
    assert pictures == []


def test_image_dir_gets_every_picture_as_a_file_beside_tensorboard(tmp_path):
    callback = GradCAMCallback("features", num_samples=2, image_dir=str(tmp_path / "pictures"),
                               image_format="png", save_gif=True)
    trainer, _ = fit(tmp_path, [callback], max_epochs=2)
    folder = tmp_path / "pictures" / "version_0"  # a folder per run: runs never overwrite
    assert [p.name for p in (tmp_path / "pictures").iterdir()] == ["version_0"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["features_class_maps_step0000006.png", "features_class_maps_step0000012.png",
                     "features_filmstrip_step0000012.png", "features_overlay_step0000006.png",
                     "features_overlay_step0000012.png", "features_sample0.gif",
                     "features_sample1.gif"]
    with Image.open(folder / "features_overlay_step0000012.png") as png:
        assert np.array_equal(np.asarray(png), callback.last_grid.permute(1, 2, 0).numpy())
    assert [e.step for e in logged_images(trainer, "gradcam/features/overlay")] == [6, 12]
    assert not (Path(trainer.log_dir) / "gradcam").exists()  # TensorBoard gets events only


def test_validate_and_test_log_too(tmp_path):
    callback = GradCAMCallback("features", num_samples=3)
    trainer, model = fit(tmp_path, [callback], max_epochs=1)
    trainer.validate(model, StripeData())  # under torch.inference_mode
    trainer.test(model, StripeData())
    assert len(logged_images(trainer, "gradcam/features/overlay")) == 2
    assert len(logged_images(trainer, "gradcam/features/test/overlay")) == 1


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precision(tmp_path, precision):
    trainer, _ = fit(tmp_path, [GradCAMCallback("features")], max_epochs=1, precision=precision)
    picture = decode(logged_images(trainer, "gradcam/features/overlay")[0])
    assert picture.std() > 20


def test_two_layers_coexist_and_resume_from_a_weights_only_checkpoint(tmp_path):
    first = [GradCAMCallback("features.0"), GradCAMCallback("features", sample_indices=[3, 1])]
    assert first[0].state_key != first[1].state_key
    trainer, _ = fit(tmp_path, first, max_epochs=1)
    checkpoint_path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(checkpoint_path)
    saved = torch.load(checkpoint_path, weights_only=True)
    assert saved["callbacks"][first[1].state_key]["sample_indices"] == [3, 1]

    resumed = [GradCAMCallback("features.0"), GradCAMCallback("features", sample_indices=[3, 1])]
    seed_everything(0)
    trainer = Trainer(max_epochs=2, logger=TensorBoardLogger(tmp_path, name="tb"),
                      callbacks=resumed, **QUIET)
    trainer.fit(LitTiny(), StripeData(), ckpt_path=checkpoint_path, weights_only=True)
    assert resumed[1].state_dict()["sample_indices"] == [3, 1]  # same samples after resume
    for tag in ("gradcam/features.0/overlay", "gradcam/features/overlay"):
        assert [e.step for e in logged_images(trainer, tag)] == [12]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"num_samples": 0}, ValueError, r"^num_samples=0: must be an int >= 1$"),
        ({"num_samples": True}, TypeError, r"^num_samples=True: must be an int >= 1, got bool"),
        ({"every_n_epochs": 0}, ValueError, r"^every_n_epochs=0: must be an int >= 1$"),
        ({"method": "gradcan"}, ValueError,
         r"^method='gradcan': valid values are 'gradcam', 'gradcam\+\+'.*Did you mean 'gradcam'"),
        ({"colormap": "jett"}, ValueError, r"^colormap='jett': not a matplotlib colormap.*'jet'"),
        ({"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}, ValueError,
         r"^mean=\[0.5, 0.5\], std=\[0.2, 0.2, 0.2\]: need the same number of values"),
        ({"mean": [0.5]}, ValueError, r"^mean=\[0.5\], std=None: pass both"),
        ({"std": [0.0], "mean": [0.1]}, ValueError, r"^std=\[0.0\]: every value must be > 0"),
        ({"mean": [float("nan")], "std": [1.0]}, ValueError, r"^mean=nan: must be a finite"),
        ({"target": "labels"}, ValueError,
         r"^target='labels': valid values are 'predicted', 'label', 'both'.*'label'"),
        ({"target": -1}, ValueError, r"^target=-1: valid targets are 'predicted'"),
        ({"target": [1]}, TypeError, r"^target=\[1\]: valid targets"),
        ({"alpha": 2}, ValueError, r"^alpha=2.0: must be a finite number >= 0.0 and <= 1.0"),
        ({"alpha": "0.5"}, TypeError, r"^alpha='0.5': must be a finite number.*got str"),
        ({"sample_indices": []}, ValueError, r"^sample_indices=\[\]: give at least one index"),
        ({"sample_indices": [1, True]}, TypeError, r"^sample_indices=.*must be an int, got True"),
        ({"class_names": "cat"}, TypeError,
         r"^class_names='cat': must be a list of strings.*did you mean \['cat'\]"),
        ({"max_image_size": 4}, ValueError, r"^max_image_size=4: must be an int >= 16 or None"),
        ({"target_layer": 3}, TypeError, r"^target_layer=3: pass the layer's dotted name"),
        ({"reshape_transform": "swin"}, ValueError,
         r"^reshape_transform='swin': valid readings are 'auto'.*'vit'.*or a callable"),
        ({"filmstrip_max": 1}, ValueError, r"^filmstrip_max=1: must be an int >= 2"),
        ({"show_heatmap": 1}, TypeError, r"^show_heatmap=1: must be True or False, got int"),
        ({"image_dir": 3}, TypeError, r"^image_dir=3: must be a directory path"),
        ({"image_format": "gif"}, ValueError, r"^image_format='gif': valid values are 'png'"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_argument(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        GradCAMCallback(**kwargs)


def test_unknown_layer_fails_at_setup_with_close_matches(tmp_path):
    with pytest.raises(ValueError, match=r"'featurs' is not a module.*Closest names: 'features'"):
        fit(tmp_path, [GradCAMCallback("featurs")], max_epochs=1)


def test_a_target_class_beyond_the_outputs_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"target class 7 is out of range .* 3 outputs"):
        fit(tmp_path, [GradCAMCallback("features", target=7)], max_epochs=1)


def test_label_target_without_labels_fails_clearly(tmp_path):
    callback = GradCAMCallback("features", target="label", label_key="missing")
    with pytest.raises(ValueError,
                       match=r"^target='label' needs class-index labels.*\(now 'missing'\)"):
        fit(tmp_path, [callback], max_epochs=1, data=StripeData(as_dict=True))


def test_sharded_strategies_are_refused_with_a_reason():
    class FakeFSDP:
        pass

    FakeFSDP.__name__ = "FSDPStrategy"
    trainer = type("T", (), {"strategy": FakeFSDP()})()
    with pytest.raises(ValueError, match=r"does not support FSDPStrategy.*strategy='ddp'"):
        GradCAMCallback("features").setup(trainer, LitTiny(), "fit")


def test_scalars_drift_and_mask_energies_are_logged(tmp_path):
    callback = GradCAMCallback("features", num_samples=4, metric_samples=4)
    trainer, _ = fit(tmp_path, [callback], max_epochs=3, data=ShapesData())
    prefix = "gradcam/features/"
    border = logged_scalars(trainer, prefix + "border_energy")
    assert sorted(border) == [4, 8, 12] and all(0 <= v <= 1 for v in border.values())
    assert sorted(logged_scalars(trainer, prefix + "drift")) == [8, 12]  # from the 2nd run
    assert sorted(logged_scalars(trainer, prefix + "drift_from_start")) == [8, 12]
    for region in ("object_mask", "shortcut_mask"):  # found by their "_mask" suffix
        energy = logged_scalars(trainer, f"{prefix}energy_in_mask/{region}")
        hits = logged_scalars(trainer, f"{prefix}pointing_game/{region}")
        assert sorted(energy) == sorted(hits) == [4, 8, 12]
        assert all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in hits.values())  # 4 samples
    assert callback.last_metrics[prefix + "drift"] == pytest.approx(
        logged_scalars(trainer, prefix + "drift")[12])


def test_filmstrip_at_the_end_of_fit_and_gifs_in_the_loggers_directory(tmp_path):
    callback = GradCAMCallback("features", num_samples=3, save_gif=True, filmstrip_max=3)
    trainer, _ = fit(tmp_path, [callback], max_epochs=5)
    strips = logged_images(trainer, "gradcam/features/filmstrip")
    assert [e.step for e in strips] == [30]
    grid_width = logged_images(trainer, "gradcam/features/overlay")[0].width
    assert strips[0].width > grid_width  # input + 3 run columns, wider than 3 sample columns
    folder = Path(trainer.log_dir) / "gradcam"
    assert sorted(p.name for p in folder.iterdir()) == [f"features_sample{i}.gif"
                                                        for i in range(3)]  # no PNG beside TB
    for index in range(3):
        with Image.open(folder / f"features_sample{index}.gif") as gif:
            assert gif.n_frames == 3  # runs 0, 2, 4 of 5, evenly spread


def test_drift_history_survives_a_weights_only_resume(tmp_path):
    first = GradCAMCallback("features", num_samples=4)
    trainer, _ = fit(tmp_path, [first], max_epochs=2, data=ShapesData())
    checkpoint = tmp_path / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["callbacks"][first.state_key]
    assert state["epochs"] == [0, 1] and state["steps"] == [4, 8]
    assert state["maps"].shape == (2, 4, 32, 32)  # 2 runs x 4 samples, float16
    bytes_per_run = state["maps"][0].numel() * state["maps"].element_size()
    assert bytes_per_run == 4 * 32 * 32 * 2

    resumed = GradCAMCallback("features", num_samples=4)
    seed_everything(0)
    trainer = Trainer(max_epochs=3, logger=TensorBoardLogger(tmp_path, name="tb"),
                      callbacks=[resumed], **QUIET)
    trainer.fit(LitTiny(), ShapesData(), ckpt_path=checkpoint, weights_only=True)
    assert resumed.state_dict()["epochs"] == [0, 1, 2]
    assert resumed.history.epochs == [0, 1, 2] and resumed.history.steps == [4, 8, 12]
    strip = logged_images(trainer, "gradcam/features/filmstrip")[0]
    assert strip.width > 3 * 128  # the filmstrip spans the runs from before the resume


def test_mask_fn_and_missing_mask_keys(tmp_path):
    def regions(batch):
        image = batch["image"]
        left = torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.bool)
        left[:, :, :16] = True
        return {"left_half": left}

    trainer, _ = fit(tmp_path / "fn", [GradCAMCallback("features", mask_fn=regions)],
                     max_epochs=1, data=ShapesData())
    assert logged_scalars(trainer, "gradcam/features/energy_in_mask/left_half")

    with pytest.raises(ValueError, match=r"^mask_keys=\['region'\]: the batch has no 'region'"):
        fit(tmp_path / "bad", [GradCAMCallback("features", mask_keys=["region"])],
            max_epochs=1, data=ShapesData())


def test_an_empty_mask_warns_once_and_counts_as_zero(tmp_path):
    def empty(batch):
        return {"nothing": torch.zeros(len(batch["image"]), 32, 32, dtype=torch.bool)}

    with pytest.warns(UserWarning, match=r"mask 'nothing' is empty for samples \[0, 1, 2"):
        trainer, _ = fit(tmp_path, [GradCAMCallback("features", mask_fn=empty)], max_epochs=2,
                         data=ShapesData())
    assert set(logged_scalars(trainer, "gradcam/features/energy_in_mask/nothing").values()) == {0}


def test_jpeg_grids_are_smaller_and_decode(tmp_path):
    sizes = {}
    for image_format in ("png", "jpeg"):
        callback = GradCAMCallback("features", image_format=image_format)
        trainer, _ = fit(tmp_path / image_format, [callback], max_epochs=1)
        event = logged_images(trainer, "gradcam/features/overlay")[0]
        with Image.open(io.BytesIO(event.encoded_image_string)) as picture:
            assert picture.format == image_format.upper()
            assert picture.size == (event.width, event.height)
        sizes[image_format] = len(event.encoded_image_string)
    assert sizes["jpeg"] < sizes["png"]
