"""Every task a vision model is trained for: binary (one logit), multi-label, segmentation,
regression; what each map explains, what the captions say, how samples group.

A tiny model per task is trained for two epochs with the callback (``tests/task_helpers``);
its maps are compared with Grad-CAM written out from scratch for the documented score, its
captions with the text the task's rule gives (drawn, then compared with the logged
picture's caption band, frames included), its class-map counts with counts by hand.
"""

from __future__ import annotations

import io
import logging
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from gradcam_callback import GradCAMCallback, compute_cam
from gradcam_callback.engine.targets import (
    BinaryTarget,
    OutputTarget,
    SegmentationTarget,
    TopLabelTarget,
    frequent_class,
    select_scores,
)
from gradcam_callback.explainer import Explainer
from gradcam_callback.ops import shrink_maps
from gradcam_callback.options import ExplainOptions
from gradcam_callback.render import annotated_grid
from gradcam_callback.render.captions import run_header
from gradcam_callback.render.grid import GAP
from gradcam_callback.tasks import Task, read_task
from tests.task_helpers import LitTask, TaskData, TaskStripes, from_scratch_gradcam

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
         "enable_checkpointing": False}
NAMES = {"binary": ["healthy", "sick"], "multilabel": ["red", "green", "blue"],
         "segmentation": ["background", "stripe", "square"], "regression": None}
TASKS = list(NAMES)
TILE = 128  # 32 px inputs are shown upscaled to 128 px
LINE_H = 13 + 4  # the grid's default font size, plus spacing
LAYER = "gradcam/features/"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        yield


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


_RUNS: dict[str, SimpleNamespace] = {}


def trained(task: str, tmp_path_factory) -> SimpleNamespace:
    """The task's model trained two epochs with the callback (built once per worker, from
    its own seed)."""
    if task in _RUNS:
        return _RUNS[task]
    seed_everything(0)
    root = tmp_path_factory.mktemp(task)
    data = TaskData(task)
    model = LitTask(task)
    callback = GradCAMCallback("features", num_samples=8, metric_samples=24,
                               target="predicted" if task == "regression" else "both",
                               task="regression" if task == "regression" else "auto",
                               class_names=NAMES[task], image_format="png", mean=[0.5] * 3,
                               std=[0.25] * 3)
    logger = TensorBoardLogger(root, name="tb")
    lines = _Lines()
    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(lines)
    try:
        trainer = Trainer(max_epochs=2, logger=logger, callbacks=[callback], **QUIET)
        trainer.fit(model, data)
    finally:
        lightning_log.removeHandler(lines)
    model.eval()
    inputs = torch.stack([data.val_set[i][0] for i in range(24)])
    with torch.no_grad():
        outputs = model(inputs)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    last = events.Images(LAYER + "overlay")[-1]
    with Image.open(io.BytesIO(last.encoded_image_string)) as picture:
        grid = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)
    run = SimpleNamespace(task=task, model=model, data=data, callback=callback,
                          trainer=trainer, inputs=inputs, outputs=outputs,
                          labels=data.val_set.labels[:24], grid=grid, step=last.step,
                          info=lines.lines, metrics=dict(trainer.callback_metrics))
    _RUNS[task] = run
    return run


def documented_score(task: str):
    """The score the README's task table documents for ``target="predicted"``."""
    if task == "binary":
        return lambda out: torch.where(out[:, 0] >= 0, out[:, 0], -out[:, 0])
    if task == "multilabel":
        return lambda out: out.gather(1, out.argmax(1, keepdim=True))[:, 0]
    if task == "segmentation":
        def score(out):
            predicted = out.argmax(1)
            classes = []
            for sample in predicted:  # the most frequent class but background (0)
                counts = torch.bincount(sample.flatten(), minlength=3)
                counts[0] = -1
                classes.append(int(counts.argmax()) if counts.max() > 0 else 0)
            c = torch.tensor(classes)
            picked = out[torch.arange(len(out)), c]
            return (picked * (predicted == c.view(-1, 1, 1))).sum(dim=(1, 2))
        return score
    return lambda out: out[:, 0]


@pytest.mark.parametrize("task", TASKS)
def test_the_task_is_read_and_said_in_one_line(task, tmp_path_factory):
    run = trained(task, tmp_path_factory)
    said = [line for line in run.info if "GradCAMCallback: task" in line]
    assert len(said) == 1 and f"task '{task}'" in said[0]


@pytest.mark.parametrize("task", TASKS)
def test_the_maps_are_grad_cam_of_the_documented_score(task, tmp_path_factory):
    run = trained(task, tmp_path_factory)
    shown = run.inputs[:8]
    expected = from_scratch_gradcam(run.model, shown, documented_score(task))
    kept = run.callback.history.maps[-1]  # the last run's maps, as the filmstrip keeps them
    torch.testing.assert_close(kept, shrink_maps(expected, 64).half().float(), atol=3e-3,
                               rtol=0)
    if task == "binary":  # both sides are shown, and the negative ones are -logit's maps
        z = run.outputs[:8, 0]
        assert bool((z < 0).any()) and bool((z >= 0).any())
        plus = from_scratch_gradcam(run.model, shown, lambda out: out[:, 0])
        negative = z < 0
        assert not torch.allclose(plus[negative], expected[negative], atol=0.05)


def expected_captions(run: SimpleNamespace) -> tuple[list[list[str]], list[bool]]:
    """The captions of the 8 shown samples by each task's rule, written out here."""
    task, names = run.task, NAMES[run.task]
    out, labels = run.outputs[:8], run.labels[:8]
    lines, wrong = [], []
    for i in range(8):
        if task == "binary":
            z, side, label = float(out[i, 0]), int(out[i, 0] >= 0), int(labels[i, 0])
            p = 1 / (1 + np.exp(-abs(z)))
            lines.append([f"true: {names[label]}", f"pred: {names[side]} {p:.2f}"])
            wrong.append(side != label)
        elif task == "multilabel":
            p = out[i].sigmoid()
            true = [names[k] for k in range(3) if labels[i, k] == 1]
            chosen = sorted((k for k in range(3) if p[k] > 0.5), key=lambda k: -float(p[k]))
            top = int(out[i].argmax())
            lines.append([f"true: {', '.join(true) or 'none'}",
                          "pred: " + (", ".join(f"{names[k]} {float(p[k]):.2f}"
                                                for k in chosen) or "none"),
                          f"map: {names[top]} {float(p[top]):.2f}"])
            wrong.append(set(chosen) != {k for k in range(3) if labels[i, k] == 1})
        elif task == "segmentation":
            def frequent(mask):
                counts = torch.bincount(mask.flatten(), minlength=3)
                counts[0] = -1
                return int(counts.argmax()) if counts.max() > 0 else 0
            predicted = out[i].argmax(0)
            t, k = frequent(labels[i]), frequent(predicted)
            lines.append([f"true: {names[t]} {float((labels[i] == t).float().mean()):.0%}",
                          f"pred: {names[k]} {float((predicted == k).float().mean()):.0%}"])
            wrong.append(t != k)
        else:
            lines.append([f"true: {float(labels[i, 0]):.3g}", f"pred: {float(out[i, 0]):.3g}"])
            wrong.append(False)
    return lines, wrong


@pytest.mark.parametrize("task", TASKS)
def test_the_logged_captions_and_frames_are_the_tasks(task, tmp_path_factory):
    run = trained(task, tmp_path_factory)
    captions, wrong = expected_captions(run)
    titles = (["input", "Grad-CAM"] if task == "regression"
              else ["input", "Grad-CAM (predicted)", "Grad-CAM (label)"])
    tiles = [torch.zeros(8, 3, TILE, TILE, dtype=torch.uint8)] * len(titles)
    epoch = run.trainer.current_epoch - 1
    header = run_header(epoch, run.step)
    drawn = annotated_grid(tiles, titles, captions, wrong, header=header)
    band = LINE_H + 2 * GAP + GAP + LINE_H * max(len(c) for c in captions)
    assert drawn.shape == run.grid.shape
    assert torch.equal(run.grid[:, :band], drawn[:, :band])
    flipped = annotated_grid(tiles, titles, captions, [not w for w in wrong], header=header)
    assert not torch.equal(run.grid[:, :band], flipped[:, :band])  # the frames are the rule's
    # the band tells the tasks apart: a softmax caption of the same logits would differ
    if task == "binary":
        softmax = [[c[0], f"pred: {NAMES[task][0]} 1.00"] for c in captions]
        other = annotated_grid(tiles, titles, softmax, [False] * 8, header=header)
        assert not torch.equal(run.grid[:, :band], other[:, :band])


@pytest.mark.parametrize("task", TASKS)
def test_class_maps_group_the_samples_by_the_tasks_rule(task, tmp_path_factory):
    run = trained(task, tmp_path_factory)
    statistics = run.callback.last_statistics
    out, labels = run.outputs, run.labels
    if task == "binary":
        by_prediction = torch.bincount((out[:, 0] >= 0).long(), minlength=2)
        by_label = torch.bincount(labels[:, 0].long(), minlength=2)
    elif task == "multilabel":
        by_prediction = (out.sigmoid() > 0.5).sum(0)
        by_label = labels.sum(0).long()
    elif task == "segmentation":
        by_prediction = torch.bincount(frequent_class(out.argmax(1), 3), minlength=3)
        by_label = torch.bincount(frequent_class(labels, 3), minlength=3)
    else:
        by_prediction, by_label = torch.tensor([24]), None
    assert statistics.count == 24
    assert statistics.prediction_counts.tolist() == by_prediction.tolist()
    if by_label is None:
        assert statistics.label_counts is None
    else:
        assert statistics.label_counts.tolist() == by_label.tolist()
    assert run.callback.last_class_maps is not None


def test_segmentation_lift_on_the_label_region_is_its_formula(tmp_path_factory):
    run = trained("segmentation", tmp_path_factory)
    out, labels = run.outputs, run.labels
    maps = from_scratch_gradcam(run.model, run.inputs, documented_score("segmentation"))
    classes = frequent_class(out.argmax(1), 3)
    region = (labels == classes.view(-1, 1, 1)).float()
    area = region.mean(dim=(1, 2))
    energy = (maps * region).sum(dim=(1, 2)) / maps.sum(dim=(1, 2))
    lifts = (energy / area)[area > 0]
    assert len(lifts) >= 2
    assert run.metrics[LAYER + "lift/label_region"].item() == pytest.approx(
        lifts.mean().item(), rel=2e-3)
    assert run.metrics[LAYER + "area/label_region"].item() == pytest.approx(
        area.mean().item(), rel=1e-4)


def test_multilabel_target_k_and_label_explain_the_documented_labels(tmp_path_factory):
    run = trained("multilabel", tmp_path_factory)
    inputs, labels = run.inputs[:8], run.labels[:8]
    fixed = Explainer(ExplainOptions(target_layer="features", target=2))
    maps = fixed.explain(run.model, inputs, labels).maps
    expected = from_scratch_gradcam(run.model, inputs, lambda out: out[:, 2])
    torch.testing.assert_close(maps, expected, atol=1e-4, rtol=0)
    by_label = Explainer(ExplainOptions(target_layer="features", target="label"))
    explained = by_label.explain(run.model, inputs, labels)
    with torch.no_grad():
        out = run.model(inputs)
    top_true = torch.where(labels.bool().any(1), out.masked_fill(~labels.bool(), -1e9).argmax(1),
                           out.argmax(1))
    assert explained.explained.tolist() == top_true.tolist()
    expected = from_scratch_gradcam(run.model, inputs,
                                    lambda o: o.gather(1, top_true.view(-1, 1))[:, 0])
    torch.testing.assert_close(explained.maps, expected, atol=1e-4, rtol=0)


class OneLogit(nn.Module):
    """A CNN with one logit: -1.7 for the first two images, +1.9 for the others."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))

    def forward(self, x):
        return self.head(self.features(x))


def test_a_negative_prediction_is_explained_by_minus_its_logit_in_the_engine():
    torch.manual_seed(0)
    model, inputs = OneLogit().eval(), torch.randn(4, 3, 16, 16)
    z = model(inputs)[:, 0].detach()
    assert bool((z < 0).any()) or bool((z >= 0).all())
    with torch.no_grad():  # make two samples negative, two positive, whatever the weights
        model.head[2].bias -= z.mean()
    z = model(inputs)[:, 0].detach()
    sides = z >= 0
    assert 0 < int(sides.sum()) < 4
    auto = compute_cam(model, inputs, "features")
    expected = from_scratch_gradcam(model, inputs, lambda out: torch.where(
        out[:, 0] >= 0, out[:, 0], -out[:, 0]))
    torch.testing.assert_close(auto, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(compute_cam(model, inputs, "features", task="binary"), auto)
    # sides chosen: 1 is +z for every sample, 0 is -z
    plus = from_scratch_gradcam(model, inputs, lambda out: out[:, 0])
    torch.testing.assert_close(compute_cam(model, inputs, "features", 1), plus, atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(compute_cam(model, inputs, "features", [1, 1, 1, 1]), plus,
                               atol=1e-5, rtol=0)
    assert not torch.allclose(auto[~sides], plus[~sides], atol=0.05)


def test_the_engine_targets_score_what_they_say():
    logits = torch.tensor([[-1.7], [1.9]])
    assert BinaryTarget()(logits).tolist() == pytest.approx([1.7, 1.9])
    assert BinaryTarget(torch.tensor([1, 0]))(logits).tolist() == pytest.approx([-1.7, -1.9])
    with pytest.raises(ValueError, match=r"sides, 0 \(negative\) or 1 \(positive\); got 2"):
        BinaryTarget(2)(logits)
    with pytest.raises(ValueError, match=r"one-logit output .* got \(2, 3\)"):
        BinaryTarget()(torch.zeros(2, 3))
    # segmentation: the class's logits over its predicted pixels; background passed over
    seg = torch.zeros(1, 3, 2, 2)
    seg[0, 0] = 5.0  # background wins everywhere but...
    seg[0, 2, 0, 0] = 6.0  # ...one pixel of class 2
    assert SegmentationTarget()(seg).tolist() == [6.0]
    assert SegmentationTarget(background=None)(seg).tolist() == [15.0]  # 3 pixels of 0
    region = torch.ones(1, 4, 4, dtype=torch.bool)  # any size: resized to the output's
    assert SegmentationTarget(2, region)(seg).tolist() == [6.0]
    assert frequent_class(torch.tensor([[[255, 255], [0, 1]]]), 3).tolist() == [1]  # 255 ignored
    assert frequent_class(torch.zeros(1, 2, 2, dtype=torch.long), 3).tolist() == [0]
    with pytest.raises(ValueError, match=r"background=3 is not a class of a model with 3"):
        SegmentationTarget(background=3)(seg)
    assert OutputTarget(1)(torch.tensor([[0.5, 2.0]])).tolist() == [2.0]
    with pytest.raises(ValueError, match=r"2 outputs per sample .* pass target=k"):
        OutputTarget()(torch.zeros(3, 2))
    assert TopLabelTarget(torch.tensor([[1, 0, 1], [0, 0, 0]]))(
        torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0]])).tolist() == [1.0, 5.0]
    # the task word picks the rule for None and integers
    assert select_scores(None, torch.tensor([[-2.0]])).tolist() == [2.0]
    assert select_scores(None, torch.tensor([[-2.0]]), "multiclass").tolist() == [-2.0]
    assert select_scores(0, torch.tensor([[3.0, 1.0]]), "regression").tolist() == [3.0]
    with pytest.raises(ValueError, match=r"task='detection': valid tasks are 'auto'"):
        select_scores(None, logits, "detection")


def test_read_task_reads_the_output_and_the_labels():
    def read(logits, labels=None, task="auto", target="predicted"):
        return read_task(task, logits, labels, target=target).name

    assert read(torch.zeros(4, 1)) == "binary"
    assert read(torch.zeros(4)) == "binary"
    assert read(torch.zeros(4, 3, 8, 8)) == "segmentation"
    assert read(torch.zeros(4, 3), torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
                ) == "multilabel"
    assert read(torch.zeros(4, 3), torch.tensor([0, 2, 1, 1])) == "multiclass"
    assert read(torch.zeros(4, 3), torch.rand(4, 3)) == "multiclass"  # soft labels
    assert read(torch.zeros(4, 1), task="regression") == "regression"
    multi_hot = torch.tensor([[1.0, 1.0, 0.0]] * 4)
    with pytest.raises(ValueError, match=r"task='binary' needs one 0/1 label per sample"
                                         r".*multi-hot: task='multilabel'"):
        read(torch.zeros(4, 1), multi_hot)
    with pytest.raises(ValueError, match=r"task='binary' needs 0/1 labels, got values .*"
                                         r"task='regression'"):
        read(torch.zeros(4, 1), torch.rand(4, 1))
    with pytest.raises(ValueError, match=r"task='multilabel' needs 0/1 labels \(4, 3\).*"
                                         r"class indices \(N,\) are task='multiclass'"):
        read(torch.zeros(4, 3), torch.tensor([0, 2, 1, 1]), task="multilabel")
    with pytest.raises(ValueError, match=r"task='multiclass', but the labels .* multi-hot"):
        read(torch.zeros(4, 3), multi_hot, task="multiclass")
    with pytest.raises(ValueError, match=r"task='segmentation' needs label masks"):
        read(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 1]), task="segmentation")
    with pytest.raises(ValueError, match=r"task='segmentation' needs label masks"):
        read(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 1]), target="label")
    assert read(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])) == "segmentation"
    with pytest.raises(ValueError, match=r"task='segmentation' needs a per-pixel output"):
        read(torch.zeros(4, 3), task="segmentation")
    with pytest.raises(ValueError, match=r"task='binary' needs one logit .* \(4, 2\)"):
        read(torch.zeros(4, 2), task="binary")
    with pytest.raises(ValueError, match=r"^target=2: a binary model .* two sides, 0 "):
        read(torch.zeros(4, 1), target=2)
    with pytest.raises(ValueError, match=r"^background=3: not a class of a model with 3"):
        read_task("auto", torch.zeros(4, 3, 8, 8), None, target="predicted", background=3)
    # one-hot rows of a softmax model, said as multiclass, are read as class indices
    task = read_task("multiclass", torch.zeros(2, 3), None, target="predicted")
    assert task.labels(torch.tensor([[0.0, 0, 1], [1, 0, 0]]))[0].tolist() == [2, 0]


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"threshold": 0.0}, ValueError, r"^threshold=0\.0: a multi-label threshold must be "
                                     r"strictly between 0 and 1"),
    ({"threshold": 1.5}, ValueError, r"^threshold=1\.5: a multi-label threshold must be "
                                     r"strictly between 0 and 1"),
    ({"threshold": "high"}, TypeError, r"^threshold='high': must be a finite number"),
    ({"threshold": 1.0}, ValueError, r"^threshold=1\.0: a multi-label threshold must be "
                                     r"strictly between 0 and 1"),
    ({"task": "detection"}, ValueError, r"^task='detection': valid tasks are 'auto', "),
    ({"task": "regression", "target": "both"}, ValueError,
     r"^target='both' with task='regression': a regression output has no label side"),
    ({"task": "binary", "class_names": ["a", "b", "c"]}, ValueError,
     r"^class_names=\['a', 'b', 'c'\] with task='binary': .* two names"),
    ({"background": -1}, ValueError, r"^background=-1"),
])
def test_bad_task_options_fail_at_construction(options, error, match):
    with pytest.raises(error, match=match):
        GradCAMCallback("features", **options)


@pytest.mark.parametrize(("data_task", "options", "match"), [
    ("multilabel", {"task": "binary"}, r"task='binary' needs one logit per sample.*\(8, 3\)"),
    ("regression", {}, r"task='binary' needs 0/1 labels, got values .*task='regression'"),
    ("segmentation", {"background": 5}, r"^background=5: not a class of a model with 3"),
    ("multilabel", {"task": "multiclass"}, r"task='multiclass', but the labels \(8, 3\) are "
                                           r"multi-hot .* pass task='multilabel'"),
    ("binary", {"target": 3}, r"^target=3: a binary model \(output \(8, 1\)\) has two sides"),
    ("segmentation", {"task": "multiclass"}, r"task='multiclass' needs an output \(N, "
                                             r"classes\).*per-pixel: task='segmentation'"),
])
def test_contradictions_fail_before_the_first_training_step(data_task, options, match,
                                                            tmp_path):
    seed_everything(0)
    model = LitTask(data_task)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(max_epochs=1, logger=False, default_root_dir=tmp_path,
                      callbacks=[GradCAMCallback("features", **options)], **QUIET)
    with pytest.raises(ValueError, match=match):
        trainer.fit(model, TaskData(data_task, n_train=16, n_val=8))
    assert trainer.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_multilabel_threshold_decides_the_predicted_set():
    task = Task("multilabel", 3, threshold=0.7)
    logits = torch.tensor([[2.0, 0.5, -3.0]])  # sigmoid 0.88, 0.62, 0.05
    lines, wrong = task.captions(logits, torch.tensor([[True, True, False]]),
                                 ["a", "b", "c"], torch.tensor([0]))
    assert lines == [["true: a, b", "pred: a 0.88", "map: a 0.88"]] and wrong == [True]
    lines, wrong = Task("multilabel", 3, threshold=0.5).captions(
        logits, torch.tensor([[True, True, False]]), ["a", "b", "c"], torch.tensor([0]))
    assert lines[0][1] == "pred: a 0.88, b 0.62" and wrong == [False]


def test_a_binary_dataset_of_other_class_names_shows_negative_and_positive():
    task = Task("binary", 1)
    assert task.names(None) == ("negative", "positive")
    assert task.names(["0", "1", "2"]) == ("negative", "positive")  # not two: not the sides
    assert list(task.names(["benign", "malignant"])) == ["benign", "malignant"]
    lines, wrong = task.captions(torch.tensor([[-2.0], [0.5]]), torch.tensor([1, 1]), None)
    assert lines == [["true: positive", "pred: negative 0.88"],
                     ["true: positive", "pred: positive 0.62"]]
    assert wrong == [True, False]


def test_regression_explains_output_k_and_shows_values(tmp_path):
    seed_everything(0)
    data = TaskData("regression", n_train=16, n_val=8)
    x = torch.stack([data.val_set[i][0] for i in range(4)])

    class TwoOutputs(LitTask):
        def forward(self, inputs):
            out = super().forward(inputs)
            return torch.cat([out, 2 * out + 1], dim=1)

    model = TwoOutputs("regression").eval()
    explainer = Explainer(ExplainOptions(target_layer="features", task="regression", target=1))
    explained = explainer.explain(model, x, data.val_set.labels[:4])
    expected = from_scratch_gradcam(model, x, lambda out: out[:, 1])
    torch.testing.assert_close(explained.maps, expected, atol=1e-4, rtol=0)
    lines, wrong = explained.task.captions(explained.logits, explained.labels, None,
                                           explained.explained)
    assert lines[0][0] == f"true: {float(data.val_set.labels[0, 0]):.3g}"
    out = explained.logits[0]
    assert lines[0][1] == f"pred: {float(out[0]):.3g}, {float(out[1]):.3g}"
    assert lines[0][2] == "map: output 1" and wrong == [False] * 4
    with pytest.raises(ValueError, match=r"2 outputs per sample .* pass target=k"):
        Explainer(ExplainOptions(target_layer="features", task="regression")).explain(model, x)


def test_a_callable_target_still_explains_any_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1),
                          nn.Flatten(2))  # (N, 5, h*w): no task reads it
    x = torch.randn(2, 3, 8, 8)
    explainer = Explainer(ExplainOptions(target_layer="1", target=lambda out: out[:, 0].sum(1)))
    explained = explainer.explain(model, x)
    assert explained.maps.shape == (2, 8, 8) and explained.explained is None
    assert explained.task.captions(explained.logits, None, None)[0] == [[], []]


def test_a_segmentation_label_target_scores_the_labelled_pixels():
    seg = torch.zeros(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[2, 2], [0, 1]]])
    task = Task("segmentation", 3)
    target = task.target("label", labels)
    (score,) = select_scores(target, seg * 1.0 + torch.arange(4.0).view(1, 1, 2, 2))
    assert score.item() == 0.0 + 1.0  # class 2's logits at its two labelled pixels (0, 1)
    regions = task.regions(labels, torch.tensor([2]), (4, 4))
    assert regions["label_region"].shape == (1, 4, 4)
    assert regions["label_region"][0, :2].all() and not regions["label_region"][0, 2:].any()


def test_the_task_is_read_from_a_yaml_config(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    config = tmp_path / "config.yaml"
    config.write_text(f"""\
trainer:
  max_epochs: 1
  enable_progress_bar: false
  default_root_dir: {tmp_path}
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args:
      save_dir: {tmp_path}
      name: tb
      version: 0
  callbacks:
    - class_path: gradcam_callback.GradCAMCallback
      init_args:
        target_layer: features
        num_samples: 4
        metric_samples: 8
        task: binary
        target: both
        class_names: [healthy, sick]
model:
  task: binary
data:
  task: binary
  n_train: 16
  n_val: 8
""")
    result = subprocess.run([sys.executable, str(here / "task_cli_script.py"), "fit",
                             "--config", str(config)], capture_output=True, text=True,
                            timeout=180, check=False,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GradCAMCallback: task 'binary' (task='binary')" in result.stderr + result.stdout
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert "gradcam/features/overlay" in events.Tags()["images"]
    # a YAML value outside the tasks fails naming the argument and the valid ones
    config.write_text(config.read_text().replace("task: binary\n        target",
                                                 "task: detection\n        target"))
    result = subprocess.run([sys.executable, str(here / "task_cli_script.py"), "fit",
                             "--config", str(config)], capture_output=True, text=True,
                            timeout=180, check=False,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode != 0 and "task" in result.stderr and "detection" in result.stderr


def test_the_stripes_are_what_the_tests_assume():
    binary = TaskStripes("binary", 8, seed=2)
    assert binary.labels.shape == (8, 1) and set(binary.labels.flatten().tolist()) <= {0.0, 1.0}
    seg = TaskStripes("segmentation", 8, seed=2)
    assert seg.labels.shape == (8, 32, 32) and seg.labels.dtype == torch.long
    assert set(seg.labels.unique().tolist()) <= {0, 1, 2}
    multi = TaskStripes("multilabel", 8, seed=2)
    assert multi.labels.shape == (8, 3) and multi.labels.sum() > 0


def test_consistency_compares_each_sample_with_its_own_group_only():
    from gradcam_callback.metrics import location_consistency
    from gradcam_callback.statistics.accumulator import AttentionStatistics
    from gradcam_callback.tasks import Grouping

    torch.manual_seed(0)
    cams = torch.rand(6, 32, 32)
    predicted = torch.tensor([0, 0, 0, 1, 1, 2])
    # multi-label: every sample is predicted in every group, its top label is `predicted`
    grouping = Grouping(3, predicted, torch.ones(6, 3, dtype=torch.bool), None)
    statistics = AttentionStatistics()
    statistics.update(cams, (32, 32), torch.zeros(6, 3, 32, 32), torch.zeros(6, 3), None, {},
                      grouping=grouping)
    result = statistics.result()
    values = location_consistency(cams, predicted)
    assert result.scalars["location_consistency"] == pytest.approx(
        values[~values.isnan()].mean().item(), abs=1e-6)
    assert result.prediction_counts.tolist() == [6, 6, 6]  # class maps: every group


def test_the_command_line_reads_a_binary_model_and_explains_each_side(tmp_path):
    import contextlib

    from gradcam_callback.cli import main

    seed_everything(0)
    model = LitTask("binary").eval()
    data = TaskStripes("binary", 2, seed=2)
    with torch.no_grad():  # one image each side of zero
        z = model(data.images * 4 - 2)[:, 0]
        model.head[2].bias -= z.mean()
    trainer = Trainer(logger=False, **QUIET)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "binary.ckpt")
    images = []
    for i in range(2):
        pixels = (data.images[i].clamp(0, 1) * 255).round().to(torch.uint8)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
        images.append(str(tmp_path / f"{i}.png"))

    def explain(out: str, *extra: str) -> str:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["explain", "--checkpoint", str(tmp_path / "binary.ckpt"), "--model",
                         "tests.task_helpers:LitTask", "--layer", "features", "--image", *images,
                         "--size", "32", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25",
                         "0.25", "--out", str(tmp_path / out), *extra])
        assert code == 0
        return printed.getvalue()

    def heatmap(out: str, i: int) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / out / f"{i}_heatmap.png"))

    printed = explain("auto")
    assert "task: binary (one logit per sample (2, 1)); pass --task" in printed
    sides = ["positive" if f"{i}.png: predicted positive" in printed else "negative"
             for i in range(2)]
    assert sorted(sides) == ["negative", "positive"], printed
    explain("negative", "--target", "0")
    explain("positive", "--target", "1")
    for i, side in enumerate(sides):  # each image is explained on its predicted side
        assert np.array_equal(heatmap("auto", i), heatmap(side, i))
        other = "positive" if side == "negative" else "negative"
        assert not np.array_equal(heatmap("auto", i), heatmap(other, i))
    assert "predicted" in explain("said", "--task", "binary")


def test_the_grid_outlines_the_predicted_region_in_white():
    from gradcam_callback.render import explanation_grid
    from gradcam_callback.render.grid import region_edges

    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[0, 2:6, 3:7] = True
    edges = region_edges(region, (32, 32))
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 12:28] = True
    ring = inside & ~torch.nn.functional.pad(inside[1:-1, 1:-1] & inside[:-2, 1:-1]
                                             & inside[2:, 1:-1] & inside[1:-1, :-2]
                                             & inside[1:-1, 2:], (1, 1, 1, 1))
    assert torch.equal(edges[0], ring)  # one pixel wide on tiles under 128 px
    images = torch.full((1, 3, 32, 32), 0.2)
    maps = torch.rand(1, 32, 32)  # not empty: no "no positive evidence" note over the tile
    plain = explanation_grid(images, [("Grad-CAM", maps)], [["x"]])
    outlined = explanation_grid(images, [("Grad-CAM", maps)], [["x"]], outlines=region)
    changed = (plain != outlined).any(dim=0)
    white = (outlined == 255).all(dim=0)
    assert int(changed.sum()) == 2 * int(ring.sum())  # on the input and on the overlay
    assert bool(white[changed].all())


def test_a_new_threshold_applies_to_the_next_run_and_keeps_the_history(tmp_path):
    seed_everything(0)
    model, data = LitTask("multilabel"), TaskData("multilabel", n_train=16, n_val=8)
    callback = GradCAMCallback("features", num_samples=4, metric_samples=0,
                               target="predicted")
    trainer = Trainer(max_epochs=2, logger=False, default_root_dir=tmp_path,
                      callbacks=[callback], **QUIET)
    trainer.fit(model, data)
    callback.threshold = 0.55
    assert len(callback.history) == 2  # the maps do not change with it: the history stays
    trainer.validate(model, data)  # logged at the fit's last step: read the grid it drew
    grid = callback.last_grid
    model.eval()
    inputs = torch.stack([data.val_set[i][0] for i in range(4)])
    with torch.no_grad():
        out = model(inputs)
    labels = data.val_set.labels[:4].bool()
    tiles = [torch.zeros(4, 3, TILE, TILE, dtype=torch.uint8)] * 2
    header = run_header(trainer.current_epoch, trainer.global_step)

    def band(threshold: float) -> torch.Tensor:
        captions, wrong = Task("multilabel", 3, threshold=threshold).captions(
            out, labels, None, out.argmax(1))
        drawn = annotated_grid(tiles, ["input", "Grad-CAM"], captions, wrong, header=header)
        return drawn[:, : LINE_H + 2 * GAP + GAP + 3 * LINE_H]

    assert not torch.equal(band(0.55), band(0.5))  # the data tell the two apart
    assert torch.equal(grid[:, : band(0.55).shape[1]], band(0.55))


class Squeezed(LitTask):
    """A binary model whose forward returns (N,), trained on float labels (N,)."""

    def forward(self, x):
        return super().forward(x)[:, 0]

    def loss(self, batch):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y[:, 0])


def test_a_squeezed_binary_output_runs_like_a_one_logit_column(tmp_path):
    seed_everything(0)
    model, data = Squeezed("binary"), TaskData("binary", n_train=32, n_val=8)
    callback = GradCAMCallback("features", num_samples=4, metric_samples=8, target="both")
    trainer = Trainer(max_epochs=1, logger=False, default_root_dir=tmp_path,
                      callbacks=[callback], **QUIET)
    trainer.fit(model, data)
    assert len(callback.history) == 1 and callback.last_statistics.count == 8
    model.eval()
    shown = torch.stack([data.val_set[i][0] for i in range(4)])
    expected = from_scratch_gradcam(model, shown, lambda z: torch.where(z >= 0, z, -z))
    torch.testing.assert_close(callback.history.maps[-1], expected.half().float(), atol=3e-3,
                               rtol=0)


def test_soft_binary_labels_need_task_binary_said_and_then_read_by_their_side():
    smoothed = torch.tensor([[0.05], [0.95], [0.95], [0.05]])
    with pytest.raises(ValueError, match=r"pass task='binary' to read soft labels in \[0, 1\]"):
        read_task("auto", torch.zeros(4, 1), smoothed, target="predicted")
    task = read_task("binary", torch.zeros(4, 1), smoothed, target="label")
    assert task.labels(smoothed)[0].tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match=r"needs 0/1 labels, got values \[-1\.0, 2\.0\]: "
                                         r"class indices"):
        read_task("binary", torch.zeros(2, 1), torch.tensor([-1.0, 2.0]), target="predicted")


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_one_logit_model_said_multiclass_or_multilabel_fails(task):
    with pytest.raises(ValueError, match=rf"task='{task}' on a one-logit output \(4, 1\): .* "
                                         r"is task='binary'"):
        read_task(task, torch.zeros(4, 1), None, target="predicted")


class DenseHead(nn.Module):
    """Per-pixel logits of three classes from a wrapped Sequential: a 1x1 head on features."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.net(x)


def test_a_segmentation_models_layer_is_its_features_not_its_logit_maps():
    from gradcam_callback import explain_batch

    torch.manual_seed(0)
    assert explain_batch(LitTask("segmentation"), torch.randn(2, 3, 32, 32),
                         None).layer_name == "features"

    # the logit maps are the last spatial output of two modules: "net" and "net.2"
    assert explain_batch(DenseHead(), torch.randn(2, 3, 16, 16), None).layer_name == "net.1"
    # a classifier's choice is unchanged: its output is not spatial
    assert explain_batch(LitTask("binary"), torch.randn(2, 3, 32, 32),
                         None).layer_name == "features"


def test_a_long_list_in_a_caption_wraps_after_its_commas():
    tiles = [torch.zeros(1, 3, 128, 128, dtype=torch.uint8)]
    long = annotated_grid(tiles, ["input"], [["pred: red 0.71, green 0.62, blue 0.55"]])
    wrapped = annotated_grid(tiles, ["input"], [["pred: red 0.71,", "  green 0.62,",
                                                 "  blue 0.55"]])
    assert torch.equal(long, wrapped)
    short = annotated_grid(tiles, ["input"], [["pred: red 0.71"]])
    assert short.shape[1] == long.shape[1] - 2 * LINE_H  # a line that fits stays one


@pytest.mark.parametrize(("task", "target", "words"), [
    ("binary", "both", "each sample's predicted side (+logit if positive, -logit if negative) "
                       "(row 'predicted') and each sample's true side (+logit if positive, "
                       "-logit if negative) (row 'label')"),
    ("binary", 0, "side 0 for every sample (-logit)"),
    ("multilabel", "label", "each sample's top-scoring true label"),
    ("regression", 1, "output 1"),
])
def test_the_info_line_says_what_the_target_explains(task, target, words):
    from gradcam_callback.explainer import explains

    assert explains(task, target) == words


class MaskNet(nn.Module):
    """A one-logit mask model (a sigmoid U-Net in small): (N, 1, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(6, 1, 1)

    def forward(self, x):
        return self.head(self.features(x))


def test_a_one_logit_mask_model_explains_its_foreground():
    torch.manual_seed(0)
    model, x = MaskNet().eval(), torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        z = model(x)
        model.head.bias -= z.median()  # about half of the pixels foreground
        z = model(x)
    task = read_task("auto", z, (z > 0).long()[:, 0], target="predicted")
    assert task.name == "segmentation" and task.outputs == 2
    assert "one-logit mask output" in task.source
    explained = Explainer(ExplainOptions(target_layer="features")).explain(model, x)
    assert explained.explained.tolist() == [1, 1, 1]  # the foreground, not the background
    expected = from_scratch_gradcam(model, x, lambda out: (out[:, 0] * (out[:, 0] > 0)).sum(
        dim=(1, 2)))
    torch.testing.assert_close(explained.maps, expected, atol=1e-5, rtol=0)
    lines, _ = explained.task.captions(explained.logits, None, None)
    share = float((z[0, 0] > 0).float().mean())
    assert lines[0] == [f"pred: 1 {share:.0%}"]
    assert torch.equal(explained.outlines, (z[:, 0] > 0))
    # the background side is -z over the background pixels
    background = Explainer(ExplainOptions(target_layer="features", target=0, background=None))
    expected = from_scratch_gradcam(model, x, lambda out: (-out[:, 0] * (out[:, 0] <= 0)).sum(
        dim=(1, 2)))
    torch.testing.assert_close(background.explain(model, x).maps, expected, atol=1e-5, rtol=0)


def test_the_callback_chooses_the_engines_layer_for_a_score_of_ones_own():
    from gradcam_callback import explain_batch

    torch.manual_seed(0)

    def score(out):
        return out[:, 1].mean(dim=(1, 2))

    model, x = DenseHead().eval(), torch.randn(2, 3, 16, 16)
    engine = explain_batch(model, x, None, score).layer_name
    explainer = Explainer(ExplainOptions(target=score))
    explainer.explain(model, x, torch.tensor([0, 1]))  # class labels: not masks, left out
    assert explainer.layer_name == engine == "net"  # the logit maps (its own output)
    predicted = Explainer(ExplainOptions())
    predicted.explain(model, x)
    assert predicted.layer_name == explain_batch(model, x, None).layer_name == "net.1"


def test_labels_a_target_does_not_read_are_left_out_unless_the_task_was_said():
    boxes = torch.zeros(4, 2, 4)  # detection-style labels of a classifier's dataset
    task = read_task("auto", torch.zeros(4, 3), boxes, target="predicted")
    labels, note = task.labels(boxes)
    assert labels is None and "left out: the target does not read them" in note
    assert task.captions(torch.zeros(4, 3), labels, None)[0][0] == ["pred: 0 0.33"]
    with pytest.raises(ValueError, match=r"task='multiclass', but the labels have shape"):
        read_task("multiclass", torch.zeros(4, 3), boxes, target="predicted")
    with pytest.raises(ValueError, match=r"task='multiclass', but the labels have shape"):
        read_task("auto", torch.zeros(4, 3), boxes, target="label")
    # a one-logit model still refuses continuous labels: they mean a regression
    with pytest.raises(ValueError, match=r"task='regression'"):
        read_task("auto", torch.zeros(4, 1), torch.rand(4, 1), target="predicted")


def test_one_hot_labels_read_multiclass_and_smoothed_multi_hot_with_the_task_said():
    one_hot = torch.eye(3)[[2, 0, 1, 1]]
    assert read_task("auto", torch.zeros(4, 3), one_hot, target="predicted").name == "multiclass"
    several = torch.tensor([[1.0, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    assert read_task("auto", torch.zeros(4, 3), several, target="predicted").name == "multilabel"
    smoothed = several * 0.9 + 0.05
    task = read_task("multilabel", torch.zeros(4, 3), smoothed, target="label")
    assert task.labels(smoothed)[0].tolist() == several.bool().tolist()
    assert read_task("auto", torch.zeros(4, 3), smoothed, target="predicted").name == "multiclass"


def test_a_callables_own_output_is_one_group():
    task = read_task("auto", torch.zeros(4, 50, 6), None, target=lambda out: out[:, 0, 0])
    assert task.groups == 1
    grouping = task.grouping(torch.zeros(4, 50, 6), None)
    assert grouping.count == 1 and grouping.predicted.tolist() == [0] * 4


def test_background_tells_checkpointed_callbacks_apart():
    assert GradCAMCallback("features").state_key == GradCAMCallback(
        "features", background=0).state_key
    assert GradCAMCallback("features", background=None).state_key != GradCAMCallback(
        "features").state_key
