"""Faithfulness (deletion against chance, insertion, Average Drop / Increase in Confidence,
mask deletion) and the sanity check, on models whose answers are known (issue 20)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from gradcam_callback import GradCAMCallback
from gradcam_callback.faithfulness import Faithfulness, mean_baseline, random_cells
from gradcam_callback.sanity import head_modules, rank_correlation, sanity_check
from gradcam_callback.statistics.accumulator import AttentionStatistics
from gradcam_callback.tasks import Task
from tests.nd_helpers import world


class OnePatch(nn.Module):
    """Reads only the top-left 4x4 patch of channel 0: class 0 when it is brighter than
    0.5, every image's mean (so a patch replaced by that mean is at chance, p = 0.5)."""

    def forward(self, x):
        s = x[:, 0, :4, :4].mean(dim=(1, 2)) - 0.5
        return torch.stack([10 * s, -10 * s], dim=1)


class Blind(nn.Module):
    """Ignores its input: the same logits for every image."""

    def forward(self, x):
        return torch.tensor([[1.0, 0.0]]).expand(len(x), 2)


def _patch_images(n=64):
    torch.manual_seed(0)
    x = torch.rand(n, 1, 16, 16) * 0.6
    x[:, :, :4, :4] = 1.0  # the patch: class 0 with probability sigmoid(10)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[:4, :4] = False
    shift = (0.5 - x.mean(dim=(1, 2, 3), keepdim=True)[..., 0]) * 256 / 240
    x[:, :, outside] += shift  # every image's mean is 0.5
    maps = torch.rand(n, 16, 16) * 0.5
    maps[:, :4, :4] = 1.0  # the map finds the patch
    patch = torch.zeros(n, 16, 16, dtype=torch.bool)
    patch[:, :4, :4] = True
    elsewhere = torch.zeros(n, 16, 16, dtype=torch.bool)
    elsewhere[:, 10:, 10:] = True
    return x, maps, {"patch": patch, "elsewhere": elsewhere}


def _measure(model, x, maps, masks=None, task="multiclass"):
    logits = model(x)
    return Faithfulness().measure(lambda inputs: model(inputs).detach(), x, maps, (4, 4),
                                  Task(task), logits, torch.zeros(len(x), dtype=torch.long),
                                  list(range(len(x))), masks)


def test_deleting_the_patch_a_model_reads_drops_it_to_chance_and_random_cells_barely():
    x, maps, masks = _patch_images()
    values = _measure(OnePatch(), x, maps, masks)
    original = torch.softmax(OnePatch()(x), dim=1)[:, 0]
    assert float(original.min()) > 0.99
    # top 10% (26 of 256 positions) holds the whole patch: p falls to chance, 0.5
    assert torch.allclose(values["deletion/10"], original - 0.5, atol=1e-4)
    # 2 random cells of 16: the patch's cell is hit by about one sample in eight
    assert float(values["random_deletion/10"].mean()) < 0.15
    ratio = values["deletion/10"].mean() / values["random_deletion/10"].mean()
    assert ratio > 3
    assert values["mask_deletion/patch"].mean() == pytest.approx(
        float(values["deletion/10"].mean()), abs=1e-6)
    assert values["mask_deletion/elsewhere"].abs().max() < 1e-6  # not what it reads
    # the input times the map keeps the patch and darkens the rest: no drop
    assert values["average_drop"].abs().max() < 1e-3
    assert float(values["deletion_auc"].mean()) < float(values["insertion_auc"].mean())


def test_a_model_that_ignores_its_input_drops_nowhere_and_the_ratio_says_why():
    x, maps, masks = _patch_images(8)
    values = _measure(Blind(), x, maps, masks)
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)[0]
    for name, per_sample in values.items():  # (increase_in_confidence: never greater)
        if name.endswith("_auc"):  # an area under p, which never moves
            assert torch.allclose(per_sample, p), name
        else:
            assert per_sample.abs().max() < 1e-6, name
    statistics = AttentionStatistics()
    for name, per_sample in values.items():  # the ratio: 0 / 0
        statistics.add_values(f"faithfulness/{name}", per_sample)
    result = statistics.result()
    assert "faithfulness/deletion_vs_random" not in result.scalars
    assert "no chance level" in result.undefined["faithfulness/deletion_vs_random"]


def test_deletion_vs_random_is_the_ratio_of_the_mean_drops():
    statistics = AttentionStatistics()
    for share, (top, random) in {"10": (0.4, 0.1), "25": (0.6, 0.2), "50": (0.8, 0.3)}.items():
        statistics.add_values(f"faithfulness/deletion/{share}", torch.tensor([top, top]))
        statistics.add_values(f"faithfulness/random_deletion/{share}",
                              torch.tensor([random, random]))
    ratio = statistics.result().scalars["faithfulness/deletion_vs_random"]
    assert ratio == pytest.approx((0.4 + 0.6 + 0.8) / (0.1 + 0.2 + 0.3))


def test_regression_has_no_probability_to_drop():
    x, maps, _ = _patch_images(4)
    assert _measure(lambda inputs: inputs.mean(dim=(1, 2, 3))[:, None], x, maps,
                    task="regression") == {}


def test_the_baseline_is_each_samples_mean_and_random_cells_are_the_same_every_time():
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0] = 1.0
    assert torch.equal(mean_baseline(x)[0, 0], torch.ones(4, 4))
    assert torch.equal(mean_baseline(x)[1], torch.zeros(3, 4, 4))
    first = random_cells([5, 6], (16, 16), (4, 4), 0.25)
    assert torch.equal(first, random_cells([5, 6], (16, 16), (4, 4), 0.25))
    assert not torch.equal(first[0], first[1])  # each sample its own cells
    assert first.float().mean().item() == pytest.approx(0.25)


# ---------------------------------------------------------------- through the callback


def _fit(kind, callback, epochs=3, shortcut=1.0):
    model, train, val = world(kind, shortcut, train=128, val=32)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    return model, trainer, [str(w.message) for w in caught]


def test_faithfulness_and_the_sanity_check_reach_callback_metrics_with_their_spread():
    callback = GradCAMCallback(input_key="signal", on_error="raise", metric_samples=32,
                               faithfulness_samples=16)
    _, trainer, _ = _fit("signal", callback)
    prefix = f"gradcam/{callback.layer_name}/"
    metrics = trainer.callback_metrics
    for name in ("faithfulness/deletion/10", "faithfulness/random_deletion/50",
                 "faithfulness/deletion_auc", "faithfulness/insertion_auc",
                 "faithfulness/average_drop", "faithfulness/increase_in_confidence",
                 "faithfulness/mask_deletion/blip_mask", "sanity/rank_correlation"):
        for suffix in ("", "_std", "_ci95"):
            assert prefix + name + suffix in metrics, name + suffix
    assert -1 <= float(metrics[prefix + "sanity/rank_correlation"]) <= 1


def test_faithfulness_samples_zero_and_sanity_layers_zero_switch_them_off():
    callback = GradCAMCallback(input_key="signal", on_error="raise", metric_samples=16,
                               faithfulness_samples=0, sanity_layers=0)
    _, trainer, _ = _fit("signal", callback, epochs=1)
    assert not [k for k in trainer.callback_metrics if "faithfulness" in k or "sanity" in k]


def test_only_the_first_faithfulness_samples_are_measured():
    from gradcam_callback.statistics import runner

    seen = []
    measure = Faithfulness.measure

    def spy(self, forward, inputs, *args, **kwargs):
        seen.append(len(inputs))
        return measure(self, forward, inputs, *args, **kwargs)

    callback = GradCAMCallback(input_key="signal", on_error="raise", metric_samples=32,
                               metric_batch_size=8, faithfulness_samples=12, sanity_layers=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.Faithfulness, "measure", spy)
        _fit("signal", callback, epochs=1)
    # the check before training (its first chunk: 8), then the run: 8 + 4 of 12
    assert seen == [8, 8, 4]


def test_the_sanity_check_warns_for_input_only_maps_and_not_for_a_trained_models():
    eigen = GradCAMCallback(input_key="volume", method="eigencam", on_error="raise",
                            metric_samples=8, faithfulness_samples=0)
    _, trainer, said = _fit("volume", eigen, epochs=4)
    correlation = float(trainer.callback_metrics[f"gradcam/{eigen.layer_name}/sanity/"
                                                 "rank_correlation"])
    assert correlation == pytest.approx(1.0, abs=1e-6)  # Eigen-CAM ignores the head
    assert sum("maps barely change" in m for m in said) == 1
    gradcam = GradCAMCallback(input_key="volume", on_error="raise", metric_samples=8,
                              faithfulness_samples=0)
    _, trainer, said = _fit("volume", gradcam, epochs=4)
    correlation = float(trainer.callback_metrics[f"gradcam/{gradcam.layer_name}/sanity/"
                                                 "rank_correlation"])
    assert correlation < 0.8
    assert not any("maps barely change" in m for m in said)


def test_the_sanity_check_leaves_the_model_and_the_rng_exactly_as_they_were():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 8, 8)
    rng = torch.get_rng_state()

    def explain(net, inputs):
        return net[0](inputs).sum(1) * net[5].weight.sum()  # depends on the head

    result = sanity_check(model, x, explain, layers=2)
    assert result.reinitialised == ["2", "5"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert [name for name, _ in head_modules(model, 1)] == ["5"]


def test_rank_correlation_uses_average_ranks_for_ties():
    a = torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    # ranks (0.5, 0.5, 2, 3) and (0.5, 0.5, 3, 2): Pearson of the ranks
    ra, rb = torch.tensor([0.5, 0.5, 2, 3]), torch.tensor([0.5, 0.5, 3, 2])
    expected = torch.corrcoef(torch.stack([ra, rb]))[0, 1]
    assert rank_correlation(a, b).item() == pytest.approx(float(expected), abs=1e-6)
    assert rank_correlation(torch.zeros(1, 4), a).isnan().all()  # a constant map


class _Regress(pl.LightningModule):
    """A Conv1d regressor of the signal world's event sign (a value, not a class)."""

    def __init__(self):
        super().__init__()
        from tests.nd_helpers import signal_net

        self.net = signal_net(classes=1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self(batch["signal"])[:, 0], batch["label"].float())

    def validation_step(self, batch, batch_idx):
        self.log("val_mse", nn.functional.mse_loss(self(batch["signal"])[:, 0],
                                                   batch["label"].float()))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def test_regression_gets_the_sanity_check_but_no_probability_to_delete():
    _, train, val = world("signal", 1.0, train=64, val=16)
    torch.manual_seed(0)
    callback = GradCAMCallback(input_key="signal", task="regression", on_error="raise",
                               metric_samples=16)
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_Regress(), train, val)
    names = list(trainer.callback_metrics)
    assert f"gradcam/{callback.layer_name}/sanity/rank_correlation" in names
    assert not [k for k in names if "faithfulness" in k]


def test_an_empty_mask_has_no_mask_deletion_and_is_named_undefined():
    x, maps, masks = _patch_images(8)
    masks["empty"] = torch.zeros(8, 16, 16, dtype=torch.bool)
    masks["patch"][0] = False
    values = _measure(OnePatch(), x, maps, masks)
    assert values["mask_deletion/empty"].isnan().all()
    patch = values["mask_deletion/patch"]
    assert patch[0].isnan() and not patch[1:].isnan().any()
    statistics = AttentionStatistics()
    for name, per_sample in values.items():
        statistics.add_values(f"faithfulness/{name}", per_sample)
    result = statistics.result()
    assert "faithfulness/mask_deletion/empty" not in result.scalars
    assert "is empty" in result.undefined["faithfulness/mask_deletion/empty"]
