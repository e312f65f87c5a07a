"""Each collaborator of the callback on its own, without a Trainer.

The observer runs a whole check, statistics pass and run on a model and a DataLoader with
sinks that only record; the sample store, the explainer, the notices, the failure policy
and the trainer adapter are checked against what a user of the callback relies on.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch import Tensor
from torch.utils.data import DataLoader

from gradcam_callback import compute_cam
from gradcam_callback.explainer import Explainer
from gradcam_callback.guard import RunGuard
from gradcam_callback.lightning import trainer_api
from gradcam_callback.notices import Notices
from gradcam_callback.observer import Observer, Run
from gradcam_callback.options import ExplainOptions, SampleOptions, validated_options
from gradcam_callback.samples import SampleReader, SampleStore
from gradcam_callback.statistics import summarise
from tests.lit_helpers import LitTiny, StripeData, StripeDataset

DEFAULTS = {name: parameter.default for name, parameter in __import__("inspect").signature(
    __import__("gradcam_callback").GradCAMCallback).parameters.items()}


def options(**changes):
    return validated_options(**{**DEFAULTS, **changes})


class RecordingSinks:
    """Sinks that keep what they are sent."""

    def __init__(self) -> None:
        self.pictures: list[tuple[str, int, Tensor]] = []
        self.scalars: list[tuple[dict[str, float], int]] = []

    def log(self, tag, picture, step, caption=""):
        self.pictures.append((tag, step, picture))

    def log_pages(self, tag, pages, step, caption=""):
        for k, page in enumerate(pages):
            self.log(tag if len(pages) == 1 else f"{tag}/page_{k + 1}", page, step, caption)

    def log_scalars(self, scalars, step):
        self.scalars.append((dict(scalars), step))

    def file_directory(self):
        return None


def model_and_loader():
    torch.manual_seed(0)
    return LitTiny().eval(), DataLoader(StripeDataset(20, seed=2), batch_size=8)


def test_the_observer_checks_measures_and_shows_without_a_trainer():
    model, loader = model_and_loader()
    sinks, said = RecordingSinks(), []
    observer = Observer(options(target_layer="features", num_samples=3, metric_samples=20,
                                metric_batch_size=7), Notices(said.append),
                        sinks, lambda step, where: None)
    run = Run("validate", epoch=2, step=30, fitting=True, prepare=lambda x: x)
    observer.check(model, [loader], run, provisional=False)
    assert sinks.pictures == [] and sinks.scalars == []  # the check logs nothing
    statistics, stop = observer.measure(model, [loader], run, collectives=None)
    assert statistics.count == 20 and not stop
    scalars = observer.show(model, [loader], run, statistics)
    assert [(tag, step) for tag, step, _ in sinks.pictures] == [
        ("gradcam/features/class_maps", 30), ("gradcam/features/overlay", 30)]
    assert sinks.scalars == [({**scalars, "epoch": 2}, 30)]
    assert scalars["gradcam/features/metric_samples"] == 20.0
    assert scalars["gradcam/features/border_lift"] == statistics.scalars["border_lift"]
    assert observer.history.epochs == [2] and observer.history.steps == [30]
    expected = compute_cam(model, observer.samples.cached("validate").inputs, "features")
    assert torch.allclose(observer.history.runs[0].float(),
                          torch.nn.functional.interpolate(expected[:, None], size=(32, 32))[:, 0]
                          .half().float(), atol=1e-2)


def test_the_observer_shows_a_test_run_without_touching_the_history():
    model, loader = model_and_loader()
    sinks = RecordingSinks()
    observer = Observer(options(target_layer="features", num_samples=2, metric_samples=0),
                        Notices(), sinks, lambda step, where: None)
    for fitting in (False, True):  # (log_cams(stage="test") called during a fit, too)
        observer.show(model, [loader], Run("test", 0, 5, fitting=fitting, prepare=lambda x: x),
                      None)
    assert [tag for tag, _, _ in sinks.pictures] == ["gradcam/features/test/overlay"] * 2
    assert len(observer.history) == 0


def test_new_options_for_the_observer_read_the_samples_again_and_restart_the_history():
    model, loader = model_and_loader()
    observer = Observer(options(target_layer="features", num_samples=2, metric_samples=0),
                        Notices(), RecordingSinks(), lambda step, where: None)
    run = Run("validate", 0, 6, fitting=True, prepare=lambda x: x)
    observer.show(model, [loader], run, None)
    assert len(observer.history) == 1
    observer.configure(options(target_layer="features", num_samples=2, metric_samples=0,
                               alpha=0.3))
    assert len(observer.history) == 1  # how it looks is no reason to forget the maps
    observer.configure(options(target_layer="features", num_samples=4, metric_samples=0))
    assert len(observer.history) == 0 and observer.samples.cached("validate") is None
    observer.show(model, [loader], run, None)
    assert observer.samples.cached("validate").indices == [0, 1, 2, 3]


def test_the_filmstrip_is_titled_by_step_with_every_n_steps():
    from gradcam_callback.history import History
    from gradcam_callback.pictures import Pictures
    from gradcam_callback.render.run import Renderer

    _, loader = model_and_loader()
    samples = SampleStore(SampleReader(SampleOptions(num_samples=2))).get("validate", [loader])
    history = History()
    for epoch, step in ((0, 5), (0, 10), (1, 15)):
        history.add(torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(step)),
                    epoch, step)
    renderer = Renderer()
    header = "filmstrip · epochs 0-1 · step 15"
    for by_step, titles in ((True, ["step 5", "step 10", "step 15"]),
                            (False, ["epoch 0", "epoch 0", "epoch 1"])):
        sinks = RecordingSinks()
        Pictures(renderer, sinks).send_filmstrip(samples, history, tag="f", step=15,
                                                 by_step=by_step, gif_prefix="x")
        (expected,) = renderer.filmstrip_pages(samples, history.maps, titles, header=header)
        assert [(tag, step) for tag, step, _ in sinks.pictures] == [("f", 15)]
        assert torch.equal(sinks.pictures[0][2], expected)


def test_the_sample_store_keeps_samples_until_the_loader_changes():
    data = StripeDataset(10, seed=2)
    store = SampleStore(SampleReader(SampleOptions(num_samples=3)))
    first = DataLoader(data, batch_size=4)
    samples = store.get("validate", [first], provisional=True)
    assert store.get("validate", None) is samples  # the loop has loaded nothing yet
    assert store.get("validate", [DataLoader(data)]) is samples  # provisional, same data
    other = store.get("validate", [DataLoader(StripeDataset(10, seed=5))])
    assert other is not samples and not torch.equal(other.inputs, samples.inputs)
    assert store.get("validate", [DataLoader(StripeDataset(10, seed=6))]) is not other
    store.restored_indices = [7, 2]
    store.forget()
    assert store.get("validate", [first]).indices == [7, 2]


def test_the_explainer_names_non_finite_samples_once_and_empties_their_maps():
    model, loader = model_and_loader()
    inputs = next(iter(loader))[0][:4].clone()
    inputs[1] = float("nan")
    said = []
    explainer = Explainer(ExplainOptions(target_layer="features"), Notices(said.append))
    explained = explainer.explain(model, inputs, indices=[10, 11, 12, 13])
    assert explained.finite.tolist() == [True, False, True, True]
    assert explained.maps[1].abs().sum() == 0 and explained.maps[0].amax() == 1.0
    explainer.explain(model, inputs, indices=[10, 11, 12, 13])
    assert len(said) == 1 and "samples [11] are NaN or infinite" in said[0]


class NaNHead(torch.nn.Module):
    """Finite features; the output is NaN for inputs whose first pixel is ``marker`` (the
    head diverged on them)."""

    def __init__(self, model, marker: float):
        super().__init__()
        self.model, self.marker = model, marker

    def forward(self, x):
        out = self.model(x)
        hit = (x[:, 0, 0, 0] == self.marker).view(-1, 1)
        return torch.where(hit, float("nan"), out)


def test_a_sample_whose_output_is_not_finite_gets_an_empty_map_with_every_method():
    model, loader = model_and_loader()
    inputs = next(iter(loader))[0][:3]
    for method in ("gradcam", "eigencam"):  # eigencam needs no gradient of the NaN output
        explainer = Explainer(ExplainOptions(target_layer="model.features", method=method))
        explained = explainer.explain(NaNHead(model, float(inputs[1, 0, 0, 0])), inputs)
        assert explained.finite.tolist() == [True, False, True]
        assert explained.maps[1].abs().sum() == 0 and explained.maps[0].amax() == 1.0


def test_the_statistics_leave_out_samples_whose_outputs_are_not_finite():
    from gradcam_callback.samples import FixedSamples
    from gradcam_callback.statistics import collect_statistics

    model, loader = model_and_loader()
    inputs, labels = next(iter(loader))
    explainer = Explainer(ExplainOptions(target_layer="model.features"))

    def chunk(indices, net):
        return (FixedSamples(indices, inputs[indices], labels[indices]),
                explainer.explain(net, inputs[indices], primary_only=True))

    head = NaNHead(model, float(inputs[1, 0, 0, 0]))
    poisoned = collect_statistics(lambda i: chunk(i, head), [0, 1, 2], chunk_size=3)
    clean = collect_statistics(lambda i: chunk(i, head), [0, 2], chunk_size=3)
    assert poisoned.count == 2 and poisoned.scalars == pytest.approx(clean.scalars)


def test_the_explainer_asks_for_labels_naming_why_there_are_none():
    model, loader = model_and_loader()
    inputs = next(iter(loader))[0][:2]
    explainer = Explainer(ExplainOptions(target_layer="features", target="label"))
    with pytest.raises(ValueError, match=r"^target='label' needs class-index labels .* but "
                                         r"the labels are torch.float32"):
        explainer.explain(model, inputs, None, label_note="the labels are torch.float32")


def test_notices_say_each_key_once_until_a_reset():
    warned, noted = [], []
    notices = Notices(warned.append, noted.append)
    for _ in range(2):
        notices.warn_once("a", "first")
        notices.info_once("b", "note")
    assert warned == ["first"] and noted == ["note"] and notices.said("a")
    notices.reset()
    notices.warn_once("a", "again")
    assert warned == ["first", "again"]


def test_the_guard_takes_rank_zeros_decision_and_configures_between_runs():
    guard = RunGuard("warn", lambda message: None)
    assert guard.agree(lambda switched_off: True) is False and guard.switched_off
    assert guard.agree(lambda switched_off: False) is True and guard.active
    guard.configure("raise", 8, 16)
    with pytest.raises(OSError), guard.attempt("a run"):
        raise OSError("disk")
    guard.configure("warn", 8, 16)
    with guard.attempt("a run"):
        guard.progress("computing the statistics")
        raise MemoryError()
    assert guard.failures[0].fix == "lower metric_batch_size= (now 16) or metric_samples"


def test_summaries_of_fewer_than_two_samples_leave_the_spread_undefined():
    cause = "no sample had a value (were all outputs NaN?)"
    assert summarise("border_lift", 0, 0.0, 0.0) == ({}, {
        "border_lift": cause, "border_lift_std": cause, "border_lift_ci95": cause})
    values, undefined = summarise("lift/box", 1, 3.0, 9.0)
    assert values == {"lift/box": 3.0} and set(undefined) == {"lift/box_std", "lift/box_ci95"}
    assert "mask 'box' is empty in every sample" in summarise("lift/box", 0, 0, 0)[1]["lift/box"]


# ----- the trainer adapter against the installed Lightning --------------------------------

def test_lightnings_loops_still_have_what_the_adapter_reads(tmp_path):
    """If a Lightning release renames these, the adapter falls back to the public
    properties (less exact); this test says so first."""
    seed_everything(0)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                      default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    loops = [trainer.fit_loop.epoch_loop.val_loop, trainer.validate_loop, trainer.test_loop]
    assert all(hasattr(loop, "_combined_loader") for loop in loops)
    source = trainer.fit_loop.epoch_loop.val_loop._data_source
    assert callable(source.is_defined) and callable(source.dataloader)


def test_the_adapter_reads_the_running_loops_loaders_and_asks_before_the_loop_does(tmp_path):
    seed_everything(0)
    fit_data, validate_data = StripeData(), StripeData(n_val=12)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, default_root_dir=tmp_path,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    seen = {}

    class Probe(__import__("lightning").pytorch.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["check"] = trainer_api.dataloaders(trainer, "validate")
            seen["requested"] = trainer_api.requested_dataloaders(trainer)

        def on_validation_start(self, trainer, pl_module):
            seen[trainer.state.fn] = trainer_api.current_dataloaders(trainer, "validate")

    trainer.callbacks.append(Probe())
    trainer.fit(LitTiny(), fit_data)
    trainer.validate(LitTiny(), validate_data)
    loaders, _ = seen["check"]
    assert loaders.dataset is fit_data.val_set
    assert seen["requested"].dataset is fit_data.val_set  # what fit's val loop will ask for
    assert seen["fit"].dataset is fit_data.val_set
    assert seen["validate"].dataset is validate_data.val_set  # not fit's


def test_the_adapter_falls_back_to_public_properties_on_other_layouts():
    trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), val_dataloaders=["val"],
                              test_dataloaders=["test"], fit_loop=SimpleNamespace())
    assert trainer_api.current_dataloaders(trainer, "validate") == ["val"]
    assert trainer_api.current_dataloaders(trainer, "test") == ["test"]
    assert trainer_api.requested_dataloaders(trainer) == ["val"]


def test_published_scalars_reach_callback_metrics_and_absent_ones_keep_their_value(tmp_path):
    trainer = Trainer(logger=False, default_root_dir=Path(tmp_path))
    trainer_api.publish(trainer, {"gradcam/x/lift": 2.5})
    trainer_api.publish(trainer, {"gradcam/x/border_lift": 1.0})
    assert float(trainer.callback_metrics["gradcam/x/lift"]) == 2.5
    assert float(trainer.callback_metrics["gradcam/x/border_lift"]) == 1.0


def test_new_picture_options_take_new_sinks_from_the_next_picture(tmp_path):
    from gradcam_callback.lightning.sinks import FileSink, PictureSinks
    from gradcam_callback.options import PictureOptions

    sinks = PictureSinks(PictureOptions(image_dir=str(tmp_path / "a")), Notices(),
                         lambda step, where: None)
    sinks.start([], None)
    picture = torch.zeros(3, 8, 8, dtype=torch.uint8)
    sinks.log("gradcam/x/overlay", picture, 1)
    sinks.configure(PictureOptions(image_dir=str(tmp_path / "a"), alpha=0.2))  # same place
    sinks.log("gradcam/x/overlay", picture, 2)
    sinks.configure(PictureOptions(image_dir=str(tmp_path / "b"), image_format="png"))
    sinks.log("gradcam/x/overlay", picture, 3)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*"))
    assert written == ["a/version_0/x_overlay_step0000001.jpg",
                       "a/version_0/x_overlay_step0000002.jpg",
                       "b/version_0/x_overlay_step0000003.png"]
    assert isinstance(sinks._current()[0], FileSink)
