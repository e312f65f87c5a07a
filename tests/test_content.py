"""What a user sees: the logged pictures decoded and compared with what they should show.

One ``trainer.validate`` run of a model that always predicts class 0 (its head's bias is
fixed so), on samples chosen to be of each class, logs a lossless grid. The tests cut that
grid into tiles and compare them with pictures rebuilt here from the formulas: the input
row is ``x * std + mean``, the second overlay row is ``compute_cam(..., labels)``, the red
frames sit on the wrong columns, the captions name the classes.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradcam_callback import GradCAMCallback, compute_cam
from gradcam_callback.history import History, evenly_spaced
from gradcam_callback.ops import resize_maps
from gradcam_callback.render import annotated_grid, filmstrip, overlay, prediction_captions
from gradcam_callback.render.captions import run_header
from gradcam_callback.render.grid import GAP, WRONG
from tests.lit_helpers import CLASS_NAMES, LitTiny, StripeData

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}
# The grid undoes this normalisation: other than the data's (0.5, 0.25), so that the shown
# inputs span about [0.2, 0.8] with a tint per channel, which a min-max scaling would change.
MEAN, STD = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), 0.1
TILE = 128  # 32 px inputs are shown upscaled (nearest) to 128 px
LINE_H = 13 + 4  # the grid's default font size, plus spacing
HEADER = run_header(0, 0)  # trainer.validate before any training: "epoch 0 · step 0"


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        yield


def logged_images(log_dir: str, tag: str) -> list:
    events = EventAccumulator(log_dir, size_guidance={"images": 0})
    events.Reload()
    return events.Images(tag) if tag in events.Tags()["images"] else []


def decode(event) -> torch.Tensor:
    with Image.open(io.BytesIO(event.encoded_image_string)) as picture:
        return torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)


class Layout:
    """Where the tiles of an annotated grid are (the geometry of ``annotated_grid``)."""

    def __init__(self, grid: torch.Tensor, columns: int, caption_lines: int,
                 header: bool = True) -> None:
        self.grid = grid
        self.header_h = LINE_H + 2 * GAP if header else 0  # the "epoch N · step S" line
        self.caption_h = self.header_h + GAP + LINE_H * caption_lines
        self.col_w = TILE + 2 * GAP
        self.title_w = grid.shape[2] - columns * self.col_w

    def tile(self, row: int, column: int) -> torch.Tensor:
        top = self.caption_h + row * (TILE + GAP)
        left = self.title_w + column * self.col_w + GAP
        return self.grid[:, top : top + TILE, left : left + TILE]

    def left_gap(self, column: int) -> torch.Tensor:
        """The strip left of a column's tiles: background, or a red frame's left side."""
        left = self.title_w + column * self.col_w
        return self.grid[:, self.caption_h :, left : left + GAP]

    def caption_band(self) -> torch.Tensor:
        return self.grid[:, : self.caption_h, self.title_w :]


def red_pixels(picture: torch.Tensor) -> int:
    wrong = torch.tensor(WRONG).view(3, 1, 1)
    return int(((picture.int() - wrong).abs().amax(dim=0) <= 2).sum())


def display_tiles(inputs: torch.Tensor) -> torch.Tensor:
    """``x * std + mean`` as float in [0, 1], upscaled 4x by repetition (nearest)."""
    shown = (inputs * STD + MEAN).clamp(0, 1)
    return shown.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)


def assert_pictures_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    difference = (actual.int() - expected.int()).abs()
    assert difference.max() <= 1, f"{int((difference > 1).sum())} pixels differ"


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("content")
    data = StripeData(n_val=24)
    labels = data.val_set.labels.tolist()
    by_class = [[i for i, label in enumerate(labels) if label == c][:2] for c in range(3)]
    indices = [by_class[c][k] for k in range(2) for c in range(3)]  # classes 0, 1, 2, 0, 1, 2
    seed_everything(0)
    model = LitTiny()
    with torch.no_grad():
        model.head[3].bias.copy_(torch.tensor([6.0, 0.0, 0.0]))  # always predicts class 0
    callback = GradCAMCallback("features", target="both", sample_indices=indices,
                               class_names=CLASS_NAMES, mean=MEAN.flatten().tolist(),
                               std=[STD] * 3,
                               image_format="png")
    logger = TensorBoardLogger(tmp, name="tb")
    trainer = Trainer(logger=logger, callbacks=[callback], **QUIET)
    trainer.validate(model, data)
    (event,) = logged_images(logger.log_dir, "gradcam/features/overlay")
    grid = decode(event)
    samples = callback.samples
    return SimpleNamespace(trainer=trainer, model=model, callback=callback, grid=grid,
                           layout=Layout(grid, len(indices), caption_lines=2), samples=samples,
                           labels=samples.labels, log_dir=logger.log_dir)


def test_the_fixture_is_what_the_tests_assume(validated):
    assert validated.samples.labels.tolist() == [0, 1, 2, 0, 1, 2]
    with torch.no_grad():
        logits = validated.model.eval()(validated.samples.inputs)
    assert logits.argmax(1).tolist() == [0] * 6
    assert torch.equal(validated.grid, validated.callback.last_grid)  # PNG is lossless
    rows = 3  # input, predicted, label
    assert validated.grid.shape[1] == validated.layout.caption_h + rows * (TILE + GAP) + GAP


def test_red_frames_are_on_the_wrong_predictions_only(validated):
    wrong = [label != 0 for label in validated.labels.tolist()]
    for column, is_wrong in enumerate(wrong):
        red = red_pixels(validated.layout.left_gap(column))
        if is_wrong:
            assert red >= 3 * 3 * TILE, f"column {column} (wrong) has no red frame"
        else:
            assert red == 0, f"column {column} (right) is framed"


def test_the_input_row_is_x_times_std_plus_mean(validated):
    expected = (display_tiles(validated.samples.inputs) * 255).round().to(torch.uint8)
    for column in range(6):
        assert_pictures_equal(validated.layout.tile(0, column), expected[column])
    shown = validated.samples.inputs * STD + MEAN
    assert shown.min() > 0.1 and shown.max() < 0.9  # so min-max scaling would be visible


def test_target_both_rows_are_the_predicted_and_the_label_maps(validated):
    inputs, labels = validated.samples.inputs, validated.labels
    images = display_tiles(inputs)
    rows = {}
    for row, targets in ((1, None), (2, labels)):
        cams = compute_cam(validated.model, inputs, "features", targets)
        rows[row] = overlay(images, resize_maps(cams, (TILE, TILE)))
        for column in range(6):
            assert_pictures_equal(validated.layout.tile(row, column), rows[row][column])
    for column, label in enumerate(labels.tolist()):
        # the two rows differ exactly where the label is not the prediction (class 0)
        same = torch.equal(validated.layout.tile(1, column), validated.layout.tile(2, column))
        assert same == (label == 0), column


def test_captions_name_the_classes_with_class_names_and_indices_without():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 5.0, 0.0]])
    labels = torch.tensor([0, 1, 4])
    lines, wrong = prediction_captions(logits, labels, CLASS_NAMES)
    assert lines == [["true: left", "pred: left 0.79"], ["true: middle", "pred: right 0.91"],
                     ["true: 4", "pred: middle 0.99"]]  # 4 has no name: its index
    assert wrong == [False, True, True]
    lines, wrong = prediction_captions(logits, labels)
    assert lines == [["true: 0", "pred: 0 0.79"], ["true: 1", "pred: 2 0.91"],
                     ["true: 4", "pred: 1 0.99"]]
    assert prediction_captions(logits, None)[1] == [False] * 3  # no labels: never wrong


def test_the_logged_captions_are_the_class_names(validated):
    labels = validated.labels.tolist()
    with torch.no_grad():
        probabilities = validated.model.eval()(validated.samples.inputs).softmax(1)[:, 0]
    tiles = torch.zeros(6, 3, TILE, TILE, dtype=torch.uint8)
    rows = [tiles, tiles, tiles]
    titles = ["input", "Grad-CAM (predicted)", "Grad-CAM (label)"]
    wrong = [label != 0 for label in labels]

    def band(names: list[str]) -> torch.Tensor:
        captions = [[f"true: {names[label]}", f"pred: {names[0]} {p:.2f}"]
                    for label, p in zip(labels, probabilities.tolist(), strict=True)]
        return Layout(annotated_grid(rows, titles, captions, wrong, header=HEADER), 6,
                      2).caption_band()

    logged = validated.layout.caption_band()
    assert torch.equal(logged, band(CLASS_NAMES))
    assert not torch.equal(logged, band(["0", "1", "2"]))


def test_the_whole_grid_is_the_one_rebuilt_from_the_formulas(validated):
    from gradcam_callback.render import explanation_grid

    inputs, labels = validated.samples.inputs, validated.labels
    with torch.no_grad():
        probabilities = validated.model.eval()(inputs).softmax(1)[:, 0]
    captions = [[f"true: {CLASS_NAMES[label]}", f"pred: left {p:.2f}"]
                for label, p in zip(labels.tolist(), probabilities.tolist(), strict=True)]
    expected = explanation_grid(
        display_tiles(inputs),
        [("Grad-CAM (predicted)", compute_cam(validated.model, inputs, "features")),
         ("Grad-CAM (label)", compute_cam(validated.model, inputs, "features", labels))],
        captions, [label != 0 for label in labels.tolist()], header=HEADER)
    assert expected.shape == validated.grid.shape
    assert_pictures_equal(validated.grid, expected)


@pytest.mark.parametrize(("runs", "limit", "kept"), [
    (5, 3, [0, 2, 4]),
    (13, 12, [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]),
    (4, 12, [0, 1, 2, 3]),
])
def test_the_filmstrip_keeps_evenly_spaced_runs_first_and_last(validated, runs, limit, kept):
    callback, inputs = validated.callback, validated.samples.inputs
    assert evenly_spaced(runs, limit) == kept
    history, limit_before = callback.history, callback.filmstrip_max
    try:
        callback.filmstrip_max = limit
        history.clear()
        for run in range(runs):  # a square that moves right run by run, lower for each sample
            maps = torch.zeros(6, 32, 32)
            for sample in range(6):
                maps[sample, 4 * sample : 4 * sample + 8, 2 * run : 2 * run + 8] = 1.0
            history.add(maps, epoch=10 * run, step=run)
        strip = callback.log_filmstrip(validated.trainer)
        kept_maps = history.maps[kept]
    finally:
        callback.filmstrip_max = limit_before
        history.clear()
    row_titles = [f"#{index} {CLASS_NAMES[label]}"
                  for index, label in zip(validated.samples.indices, validated.labels.tolist(),
                                          strict=True)]
    header = f"filmstrip · epochs 0-{10 * (runs - 1)} · step {validated.trainer.global_step}"
    expected = filmstrip(display_tiles(inputs), kept_maps, [f"epoch {10 * r}" for r in kept],
                         row_titles, header=header)
    assert strip.shape == expected.shape  # one column per kept run, plus the input
    assert_pictures_equal(strip, expected)


def test_evenly_spaced_always_keeps_the_first_and_the_last():
    for limit in range(2, 9):
        for count in range(1, 40):
            kept = evenly_spaced(count, limit)
            assert kept[0] == 0 and kept[-1] == count - 1
            assert len(kept) == min(count, limit)
            assert kept == sorted(set(kept))


def test_drift_is_against_the_previous_run_and_drift_from_start_against_the_first():
    def cosine_drift(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.flatten(), b.flatten()
        return 1 - float(a @ b / (a.norm() * b.norm()))

    runs = [torch.zeros(1, 4, 4) for _ in range(3)]
    runs[0][0, :, :2] = 1  # the left half
    runs[1][0, :2, :] = 1  # the top half
    runs[2][0, 0, :] = 1  # the first row
    history = History()
    assert history.add(runs[0], 0, 10) == {}  # nothing to compare the first run with
    second = history.add(runs[1], 1, 20)
    assert second["drift"] == pytest.approx(cosine_drift(runs[0], runs[1]))
    assert second["drift_from_start"] == pytest.approx(cosine_drift(runs[0], runs[1]))
    third = history.add(runs[2], 2, 30)
    assert third["drift"] == pytest.approx(cosine_drift(runs[1], runs[2]))  # 1 - 1/sqrt(2)
    assert third["drift_from_start"] == pytest.approx(cosine_drift(runs[0], runs[2]))
    assert third["drift"] != pytest.approx(third["drift_from_start"])
    assert history.epochs == [0, 1, 2] and history.steps == [10, 20, 30]


def test_every_n_epochs_does_not_apply_to_trainer_validate(tmp_path):
    callback = GradCAMCallback("features", num_samples=2, every_n_epochs=3)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = Trainer(logger=logger, callbacks=[callback], **QUIET)
    trainer.validate(LitTiny(), StripeData(n_val=8))
    assert [e.step for e in logged_images(logger.log_dir, "gradcam/features/overlay")] == [0]


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def small_fit(callback: GradCAMCallback, **trainer_kwargs) -> None:
    seed_everything(0)
    trainer = Trainer(max_epochs=2, limit_train_batches=2, callbacks=[callback], **QUIET,
                      **trainer_kwargs)
    trainer.fit(LitTiny(), StripeData(n_val=8))


def test_with_lightnings_defaults_only_tensorboard_and_checkpoint_files_appear(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback = GradCAMCallback(num_samples=2, save_gif=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # TensorBoard is there: nothing to warn
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        small_fit(callback)  # Lightning's default logger: TensorBoard in ./lightning_logs
    files = files_under(tmp_path)
    run = "lightning_logs/version_0/"
    gifs = [f"{run}gradcam/features_sample{i}.gif" for i in range(2)]  # asked for, in the run
    others = [f for f in files if f not in gifs]
    assert sorted(set(files) & set(gifs)) == gifs
    assert others[0] == f"{run}checkpoints/epoch=1-step=4.ckpt"
    assert others[1].startswith(f"{run}events.out.tfevents.")
    assert others[2:] == [f"{run}hparams.yaml"]
    assert len(logged_images(str(tmp_path / run), "gradcam/features/overlay")) == 2


def test_without_loggers_a_run_writes_its_checkpoint_and_a_picture_folder_of_its_own(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback = GradCAMCallback(num_samples=2, save_gif=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the pictures have a place: no warning
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        small_fit(callback, logger=False)
    run = "gradcam/version_0/features_"  # <default_root_dir>/gradcam/version_<n>
    assert files_under(tmp_path) == [
        "checkpoints/epoch=1-step=4.ckpt",
        f"{run}class_maps_step0000002.jpg", f"{run}class_maps_step0000004.jpg",  # metric_samples
        f"{run}filmstrip_step0000004.jpg", f"{run}overlay_step0000002.jpg",
        f"{run}overlay_step0000004.jpg", f"{run}sample0.gif", f"{run}sample1.gif"]
    assert callback.last_grid is not None and len(callback.history) == 2
