"""Signals (N, C, T) and volumes (N, C, D, H, W) through the callback: read, explained,
measured, remembered and drawn, with the errors before training (issue 19)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from gradcam_callback import GradCAMCallback
from gradcam_callback.history import History
from gradcam_callback.metrics import lift
from gradcam_callback.render.colormap import colormap_lut
from gradcam_callback.render.grid import BACKGROUND, GAP
from gradcam_callback.render.signals import (
    PLOT_BACKGROUND,
    signal_block,
    signal_class_maps,
    signal_filmstrip_block,
)
from gradcam_callback.render.volumes import PEAK, slice_positions, volume_block
from gradcam_callback.statistics.accumulator import AttentionStatistics
from gradcam_callback.synthetic_nd import ShortcutSignals, ShortcutVolumes
from tests.nd_helpers import LitND, signal_net, volume_net, world


def fit(model, train, val, callback, epochs=1, **trainer):
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, **trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train, val)
    return trainer


# ---------------------------------------------------------------- through fit, validate, test


@pytest.mark.parametrize("kind, mask, layer_rank", [("signal", "blip_mask", 1),
                                                    ("volume", "marker_mask", 3)])
def test_signals_and_volumes_run_zero_config_through_fit_validate_and_test(
        tmp_path, kind, mask, layer_rank):
    model, train, val = world(kind, 1.0, train=64, val=32)
    callback = GradCAMCallback(input_key=kind, on_error="raise", metric_samples=32,
                               num_samples=4)
    trainer = fit(model, train, val, callback, epochs=2,
                  default_root_dir=tmp_path)
    layer = callback.layer_name
    metrics = trainer.callback_metrics
    for name in (f"lift/{mask}", "border_lift", "location_consistency"):
        for suffix in ("", "_std", "_ci95"):
            assert f"gradcam/{layer}/{name}{suffix}" in metrics
    assert metrics[f"gradcam/{layer}/metric_samples"] == 32
    assert f"gradcam/{layer}/drift" in metrics  # a second run compares with the first
    assert callback.history.maps.dim() == 2 + layer_rank  # (runs, N, *s)
    assert callback.last_grid is not None and callback.last_filmstrip is not None
    assert callback.last_class_maps is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(model, val)
        trainer.test(model, val)
    assert f"gradcam/{layer}/test/lift/{mask}" in trainer.callback_metrics


def test_a_logger_gets_the_scalars_and_pictures_of_a_volume_run(tmp_path):
    model, train, val = world("volume", 1.0, train=32, val=16)
    callback = GradCAMCallback(input_key="volume", on_error="raise", metric_samples=16,
                               num_samples=2, image_dir=str(tmp_path / "pictures"))
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback], logger=CSVLogger(tmp_path),
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train, val)
    written = sorted(p.name for p in (tmp_path / "pictures").rglob("*.jpg"))
    assert any("overlay" in name for name in written)
    assert any("class_maps" in name for name in written)
    assert any("filmstrip" in name for name in written)
    rows = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert f"gradcam/{callback.layer_name}/lift/marker_mask" in rows


# ---------------------------------------------------------------- errors before training


def _signals(n=16, channels=2, length=64):
    torch.manual_seed(0)
    return TensorDataset(torch.randn(n, channels, length), torch.arange(n) % 2)


def _first_step_never_runs(model, data, callback, match):
    steps = []
    model.on_train_batch_start = lambda *a: steps.append(1)
    with pytest.raises(ValueError, match=match):
        fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), callback)
    assert steps == []


def test_slice_axis_with_signals_is_refused_before_training():
    torch.manual_seed(0)
    _first_step_never_runs(LitND(signal_net(channels=2), "x"), _signals(),
                           GradCAMCallback(slice_axis=1, batch_to_input=tuple),
                           r"slice_axis=1: slices are cut from volumes.*signals \(16, 2, 64\)"
                           .replace("16", "8"))


def test_signal_channels_beyond_the_signals_channels_is_refused_before_training():
    torch.manual_seed(0)
    _first_step_never_runs(LitND(signal_net(channels=2), "x"), _signals(),
                           GradCAMCallback(signal_channels=[0, 5], batch_to_input=tuple),
                           r"signal_channels=\[0, 5\].*2 channel\(s\), so channel 5")


def test_signal_channels_with_volumes_is_refused_before_training():
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(8, 1, 16, 16, 16), torch.arange(8) % 2)
    _first_step_never_runs(LitND(volume_net(), "x"), data,
                           GradCAMCallback(signal_channels=0, batch_to_input=tuple),
                           r"signal_channels=\[0\]: lines are drawn for signals.*volumes")


def test_a_slice_axis_outside_the_volume_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"slice_axis=3: outside the volume.*0 \(depth\)"):
        GradCAMCallback(slice_axis=3)


def test_a_mask_of_another_rank_than_the_volumes_is_refused_before_training():
    torch.manual_seed(0)
    volumes = torch.rand(8, 1, 16, 16, 16)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):  # a 2-D mask for a 3-D input
            return {"x": volumes[i], "label": torch.tensor(i % 2),
                    "spot_mask": torch.zeros(16, 16, dtype=torch.bool)}

    model = LitND(volume_net(), "x")
    steps = []
    model.on_train_batch_start = lambda *a: steps.append(1)
    with pytest.raises(ValueError, match=r"mask 'spot_mask' must be \(N, D, H, W\) with N = "
                                         r"8, the rank of the inputs \(8, 1, 16, 16, 16\), "
                                         r"got \(8, 16, 16\)"):
        fit(model, DataLoader(Data(), batch_size=8), DataLoader(Data(), batch_size=8),
            GradCAMCallback(input_key="x", mask_keys=["spot_mask"]))
    assert steps == []


def test_inputs_of_no_known_rank_name_the_shapes_that_are_read():
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(8, 2), torch.arange(8) % 2)
    with pytest.raises(ValueError, match=r"signals \(N, C, T\), images \(N, C, H, W\) or "
                                         r"volumes \(N, C, D, H, W\).*\(8, 2\)"):
        fit(LitND(signal_net(), "x"), DataLoader(data, batch_size=8),
            DataLoader(data, batch_size=8), GradCAMCallback(batch_to_input=tuple),
            num_sanity_val_steps=0)


# ---------------------------------------------------------------- statistics and history


def test_lift_of_volumes_in_the_statistics_equals_its_formula_on_the_same_maps():
    torch.manual_seed(0)
    maps = torch.rand(6, 8, 8, 8) ** 3
    marker = torch.zeros(6, 8, 8, 8, dtype=torch.bool)
    marker[:, :2, :2, :2] = True
    statistics = AttentionStatistics()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]] * 3)
    statistics.update(maps, (4, 4, 4), torch.rand(6, 1, 8, 8, 8), logits, None,
                      {"marker": marker})
    result = statistics.result()
    expected = lift(maps, marker)
    assert result.scalars["lift/marker"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert result.scalars["lift/marker_std"] == pytest.approx(
        float(expected.std(unbiased=False)), rel=1e-4)
    assert tuple(result.by_prediction.shape) == (2, 8, 8, 8)  # 8 < 16 a side: kept
    # class 1's mean map is the mean of samples 1, 3, 5
    assert torch.allclose(result.by_prediction[1], maps[1::2].mean(0), atol=1e-6)
    assert tuple(result.mean_image.shape) == (1, 8, 8, 8)


def test_class_maps_of_long_signals_keep_256_steps_and_of_large_volumes_16_a_side():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    signals = AttentionStatistics()
    signals.update(torch.rand(2, 2000), (125,), torch.rand(2, 3, 2000), logits, None, {})
    volumes = AttentionStatistics()
    volumes.update(torch.rand(2, 64, 64, 32), (8, 8, 4), torch.rand(2, 1, 64, 64, 32),
                   logits, None, {})
    assert tuple(signals.result().by_prediction.shape) == (2, 256)
    assert tuple(signals.result().mean_image.shape) == (3, 256)
    assert tuple(volumes.result().by_prediction.shape) == (2, 16, 16, 8)
    assert tuple(volumes.result().mean_image.shape) == (1, 32, 32, 16)


def test_the_history_keeps_volumes_at_32_a_side_and_signals_at_256_steps_in_float16():
    volumes, signals = History(), History()
    torch.manual_seed(0)
    first = torch.linspace(0, 1, 64).view(1, 64, 1, 1).expand(2, 64, 128, 48).clone()
    volumes.add(first, epoch=0, step=1)
    drift = volumes.add(first.flip(1), epoch=1, step=2)
    signals.add(torch.rand(3, 5000), epoch=0, step=1)
    assert volumes.runs[0].dtype == torch.float16
    assert tuple(volumes.runs[0].shape) == (2, 16, 32, 12)
    assert tuple(signals.runs[0].shape) == (3, 256)
    assert drift["drift"] > 0.01  # flipped maps differ
    # the checkpoint round trip keeps the shapes
    restored = History()
    restored.load_state_dict(volumes.state_dict())
    assert tuple(restored.maps.shape) == (2, 2, 16, 32, 12)
    assert restored.epochs == [0, 1]


def test_a_history_of_signals_is_cleared_for_volumes_not_mixed():
    history = History()
    history.add(torch.rand(2, 300), epoch=0, step=1)
    assert not history.fit_to(2, (8, 8, 8))
    assert len(history) == 0


# ---------------------------------------------------------------- the pictures, decoded


def _tile_columns(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of the runs of non-background pixels along one row of a picture."""
    background = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1)
    filled = (row != background).any(0).tolist()
    runs, start = [], None
    for x, on in enumerate([*filled, False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            runs.append((start, x))
            start = None
    return runs


def test_a_volume_block_shows_evenly_spaced_slices_the_peak_framed_and_the_projection():
    depth = 32
    # each slice k of the input has the gray level k / 31: the tile tells its slice
    levels = torch.arange(depth, dtype=torch.float32) / (depth - 1)
    volume = levels.view(1, depth, 1, 1).expand(3, depth, 16, 16).clone()
    volume_map = torch.zeros(depth, 16, 16)
    volume_map[9, 4:8, 4:8] = 1.0  # the evidence sits in slice 9
    block = volume_block(volume, [("Grad-CAM", volume_map)], ["#0 pred: bright 0.9"],
                         wrong=False, max_image_size=128)
    chosen = slice_positions(depth, 6, peak=9)
    assert chosen == [2, 9, 13, 18, 24, 29]
    # the input row: one tile per chosen slice, then the projection (the brightest)
    input_row_y = next(y for y in range(block.shape[1])
                       if len(_tile_columns(block[:, y])) == 7)
    tiles = _tile_columns(block[:, input_row_y + 20])
    assert len(tiles) == 7
    grays = [int(block[0, input_row_y + 64, (a + b) // 2]) for a, b in tiles]
    assert grays[:6] == [round(255 * k / 31) for k in chosen]
    assert grays[6] == 255  # the maximum projection of a ramp is its last slice
    # the peak slice's tile (slice 9: the second) is framed in yellow, the others not
    peak = torch.tensor(PEAK, dtype=torch.uint8)
    for i, (a, _) in enumerate(tiles):
        edge = block[:, input_row_y + 64, a + 1]
        assert bool((edge == peak).all()) == (i == 1)


def test_a_wrong_volume_is_framed_in_red_and_a_right_one_is_not():
    volume = torch.rand(3, 8, 8, 8)
    volume_map = torch.rand(8, 8, 8)
    wrong = volume_block(volume, [("Grad-CAM", volume_map)], ["x"], wrong=True)
    right = volume_block(volume, [("Grad-CAM", volume_map)], ["x"], wrong=False)
    assert tuple(wrong[:, 0, 0].tolist()) == (230, 40, 40)
    assert tuple(right[:, 0, 0].tolist()) == BACKGROUND


def _hot(band_row: torch.Tensor) -> torch.Tensor:
    """Which columns of a band row are hot (jet's orange to red: red well above blue)."""
    red, green, blue = band_row.float()
    return (red > blue + 30) & (red > green)


def _hottest_x(band_row: torch.Tensor) -> float:
    """The centre of the hot columns of a band row."""
    return float(_hot(band_row).nonzero().float().mean())


def test_a_signal_block_draws_the_band_hot_where_the_map_is_and_the_line_over_it():
    length, width = 128, 256
    lines = torch.zeros(1, length)
    lines[0, 64:] = 1.0  # a step: low on the left, high on the right
    band = torch.zeros(length)
    band[96:104] = 1.0  # the evidence at steps 96-103
    block = signal_block(lines, [("Grad-CAM", band)], ["#0 pred: bump 0.8"], wrong=False,
                         width=width)
    height = max(80, width // 3)
    # the two plots: find the columns of the tile (right of the titles)
    plot_rows = [y for y in range(block.shape[1])
                 if (block[:, y] == torch.tensor(PLOT_BACKGROUND, dtype=torch.uint8)
                     .view(3, 1)).all(0).sum() > width // 2]
    assert plot_rows, "the plain input plot is drawn on the plot background"
    left = next(x for x in range(block.shape[2])
                if tuple(block[:, plot_rows[0], x].tolist()) == PLOT_BACKGROUND)
    band_y = plot_rows[-1] + 16 + GAP + 10  # inside the Grad-CAM plot, below the input's
    band_y += height - 16 - 10 - 20  # near the bottom of the plot, under the high line
    row = block[:, band_y, left : left + width]
    expected = round(100 * (width - 1) / (length - 1))
    assert abs(_hottest_x(row) - expected) <= 6
    # the line: white pixels near the top of the plot on the right half only
    white = (block[:, :, left : left + width] >= 250).all(0)
    top_rows = white[plot_rows[0] : plot_rows[0] + 8]
    assert top_rows[:, width // 2 + 4 :].any() and not top_rows[:, : width // 2 - 4].any()


def test_the_signal_filmstrip_stacks_a_band_per_run_hot_where_each_run_looked():
    length, width = 100, 256
    lines = torch.zeros(1, length)
    history = torch.zeros(3, length)
    for r, t in enumerate((10, 50, 90)):  # the evidence moves over the runs
        history[r, t - 2 : t + 3] = 1.0
    block = signal_filmstrip_block(lines, history, ["epoch 0", "epoch 1", "epoch 2"], "#0",
                                   width=width)
    # the bands: runs of rows of the tile column with hot pixels, one per run
    left = block.shape[2] - GAP - width
    hot_rows = [y for y in range(block.shape[1])
                if _hot(block[:, y, left : left + width]).any()]
    bands = [[hot_rows[0]]]
    for y in hot_rows[1:]:
        if y <= bands[-1][-1] + 2:  # (the line crosses the band)
            bands[-1].append(y)
        else:
            bands.append([y])
    assert len(bands) == 3
    hottest = [_hottest_x(block[:, rows[len(rows) // 2], left : left + width])
               for rows in bands]
    for x, t in zip(hottest, (10, 50, 90), strict=True):
        assert abs(x - round(t * (width - 1) / (length - 1))) <= 6


def test_signal_class_maps_draw_one_curve_per_class_peaking_where_its_map_does():
    length = 128
    maps = torch.zeros(2, length)
    maps[0, 20:24] = 1.0
    maps[1, 100:104] = 0.5
    picture = signal_class_maps([("by prediction", maps, torch.tensor([3, 5]))], ["a", "b"],
                                width=256)
    palette = (colormap_lut("tab10")[torch.tensor([12, 37])] * 255).round().to(torch.uint8)
    peaks = []
    for colour in palette:
        hit = (picture == colour.view(3, 1, 1)).all(0)
        ys, xs = hit.nonzero(as_tuple=True)
        top = ys.min()
        peaks.append((int(top), int(xs[ys == top].float().mean())))
    # class a's curve is highest near step 21, class b's near step 101 and lower (0.5)
    assert abs(peaks[0][1] - (GAP + 21.5 * 255 / 127)) <= 8
    assert abs(peaks[1][1] - (GAP + 101.5 * 255 / 127)) <= 8
    assert peaks[1][0] > peaks[0][0] + 20


# ---------------------------------------------------------------- training is unchanged


@pytest.mark.parametrize("kind", ["signal", "volume"])
def test_training_is_bit_identical_with_and_without_the_callback(kind):
    def trained(callbacks):
        model, train, val = world(kind, 1.0, train=64, val=16)
        trainer = pl.Trainer(max_epochs=2, callbacks=callbacks, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, train, val)
        return [p.detach().clone() for p in model.parameters()]

    plain = trained([])
    watched = trained([GradCAMCallback(input_key=kind, on_error="raise", metric_samples=16)])
    assert all(torch.equal(a, b) for a, b in zip(plain, watched, strict=True))


# ---------------------------------------------------------------- shortcut worlds


def _lifts(kind: str, shortcut_prob: float, seed: int) -> dict[str, float]:
    model, train, val = world(kind, shortcut_prob, train=512, val=64, seed=seed)
    callback = GradCAMCallback(input_key=kind, on_error="raise", metric_samples=64)
    trainer = fit(model, train, val, callback, epochs=10)
    prefix = f"gradcam/{callback.layer_name}/lift/"
    cue, honest = (("blip_mask", "event_mask") if kind == "signal"
                   else ("marker_mask", "object_mask"))
    return {"cue": float(trainer.callback_metrics[prefix + cue]),
            "honest": float(trainer.callback_metrics[prefix + honest])}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["signal", "volume"])
def test_lift_separates_a_shortcut_run_from_an_honest_one(kind):
    shortcut, honest = _lifts(kind, 1.0, seed=0), _lifts(kind, 0.0, seed=0)
    # the shortcut run looks at the cue more than at the real evidence, the honest run the
    # other way round (measured in the README's table over seeds 0-2)
    assert shortcut["cue"] > shortcut["honest"]
    assert honest["honest"] > honest["cue"]
    assert shortcut["cue"] > 1.5 * honest["cue"]


def test_the_worlds_masks_have_the_inputs_rank():
    signal = ShortcutSignals(1, length=64)[0]
    volume = ShortcutVolumes(1, size=16)[0]
    assert signal["blip_mask"].shape == signal["signal"].shape[1:]
    assert volume["marker_mask"].shape == volume["volume"].shape[1:]
    assert (volume["volume"][0][volume["marker_mask"]] >= 0.4).all()


# ---------------------------------------------------------------- 1-D transformers


class _Tokens1D(torch.nn.Module):
    """A 1-D transformer: a strided Conv1d embeds patches as tokens (N, T, C)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = torch.nn.Conv1d(2, width, 8, stride=8)
        self.encoder = torch.nn.TransformerEncoderLayer(width, 4, 64, batch_first=True,
                                                        dropout=0.0)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.norm(self.encoder(self.embed(x).transpose(1, 2))).mean(1))


@pytest.mark.parametrize("length, width", [(512, 32), (256, 32)])  # 64 x 32; 32 x 32 tokens
def test_a_1d_transformers_tokens_are_read_as_time_by_channels_and_explained_exactly(
        length, width):
    from gradcam_callback import explain_batch

    torch.manual_seed(0)
    model = _Tokens1D(width).eval()
    x = torch.randn(4, 2, length)
    result = explain_batch(model, x, None)
    assert result.layer_name == "norm" and result.reading.startswith("channels-last")
    # from scratch: tokens A (N, T, C), weights = gradients averaged over time
    store = {}
    handle = model.norm.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    out = model(x)
    handle.remove()
    (g,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), store["a"])
    cam = torch.relu((g.mean(1, keepdim=True) * store["a"]).sum(2)).detach()  # (N, T)
    cam = torch.nn.functional.interpolate(cam[:, None], size=length, mode="linear",
                                          align_corners=False)[:, 0]
    low, high = cam.amin(1, keepdim=True), cam.amax(1, keepdim=True)
    expected = (cam - low) / (high - low)
    assert tuple(result.cams.shape) == (4, length)
    assert torch.allclose(result.cams, expected, atol=1e-5)


# ---------------------------------------------------------------- per-sample pictures, GIFs


@pytest.mark.parametrize("kind", ["signal", "volume"])
def test_gifs_of_signals_and_volumes_have_a_frame_per_run(tmp_path, kind):
    from PIL import Image

    model, train, val = world(kind, 1.0, train=32, val=8)
    callback = GradCAMCallback(input_key=kind, on_error="raise", metric_samples=8,
                               num_samples=2, save_gif=True, image_dir=str(tmp_path))
    fit(model, train, val, callback, epochs=3)
    gifs = sorted(tmp_path.rglob("*.gif"))
    assert [p.name for p in gifs] == [f"{callback.layer_name}_sample0.gif",
                                     f"{callback.layer_name}_sample1.gif"]
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == 3  # one per validation run of the fit


def test_per_sample_pictures_of_signals_are_one_block_each_under_the_header():
    from gradcam_callback.render.run import Renderer
    from gradcam_callback.samples import FixedSamples

    torch.manual_seed(0)
    samples = FixedSamples([4, 9], torch.randn(2, 1, 128), torch.tensor([0, 1]))
    maps = torch.rand(2, 128)
    renderer = Renderer()
    grid = renderer.grid_pages(samples, [("Grad-CAM", maps)], [["a"], ["b"]], [False, True],
                               header="epoch 1")[0]
    pictures = dict(renderer.sample_pictures(samples, [("Grad-CAM", maps)], [["a"], ["b"]],
                                             [False, True], header="epoch 1"))
    assert list(pictures) == [4, 9]
    # the grid stacks both blocks; each picture holds one, as wide as the grid
    assert pictures[4].shape[2] == grid.shape[2]
    assert pictures[4].shape[1] + pictures[9].shape[1] > grid.shape[1]
    assert pictures[4].shape[1] < grid.shape[1]
    red = torch.tensor([230, 40, 40], dtype=torch.uint8).view(3, 1)
    has_red = [bool((p == red.view(3, 1, 1)).all(0).any()) for p in pictures.values()]
    assert has_red == [False, True]  # only the wrong one is framed


# ---------------------------------------------------------------- found by the review pass


def test_statistics_of_signals_padded_to_another_length_per_chunk_fold_together():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    statistics = AttentionStatistics()
    statistics.update(torch.rand(2, 96), (24,), torch.rand(2, 1, 96), logits, None, {})
    statistics.update(torch.rand(2, 120), (30,), torch.rand(2, 1, 120), logits, None, {})
    result = statistics.result()
    assert result.count == 4 and tuple(result.by_prediction.shape) == (2, 96)


def test_a_2d_mask_for_volumes_is_refused_not_smeared_over_the_slices():
    from gradcam_callback.samples import SampleReader

    volumes = torch.rand(2, 1, 8, 16, 16)
    with pytest.raises(ValueError, match=r"mask 'spot_mask' has size \(1, 16, 16\) for inputs "
                                         r"of size \(8, 16, 16\)"):
        SampleReader().masks({"image": volumes, "spot_mask": torch.ones(2, 1, 16, 16)},
                             volumes)


def test_an_empty_volume_map_marks_no_peak_slice():
    volume = torch.rand(3, 8, 8, 8)
    block = volume_block(volume, [("Grad-CAM", torch.zeros(8, 8, 8))], ["x"], wrong=False)
    peak = torch.tensor(PEAK, dtype=torch.uint8).view(3, 1, 1)
    assert not (block == peak).all(0).any()


def test_a_long_signals_short_bursts_all_show_in_the_band():
    from gradcam_callback.render.signals import signal_tiles

    band = torch.zeros(1, 5000)
    for start in (500, 1700, 2900, 4100):
        band[0, start : start + 8] = 1.0
    tile = signal_tiles(None, band, width=256, height=40, axis=False)[0]
    hot = _hot(tile[:, 20])
    bursts = (hot[1:] & ~hot[:-1]).sum() + int(hot[0])
    assert int(bursts) == 4


def test_show_heatmap_with_signals_adds_a_bare_band_row():
    block = signal_block(torch.rand(1, 64), [("Grad-CAM", torch.rand(64))], ["x"],
                         wrong=False, width=256, show_heatmap=True)
    plain = signal_block(torch.rand(1, 64), [("Grad-CAM", torch.rand(64))], ["x"],
                         wrong=False, width=256)
    assert block.shape[1] > plain.shape[1] + 60


def test_thin_volumes_have_no_border_along_their_few_slices():
    from gradcam_callback.metrics import border_lift

    maps = torch.zeros(1, 3, 20, 20)
    maps[0, :, 8:12, 8:12] = 1.0  # in the middle of every slice: no border evidence
    assert float(border_lift(maps)) == 0.0


def test_n1_masks_of_signals_and_volumes_are_squeezed():
    from gradcam_callback.samples import SampleReader

    signals = torch.rand(2, 3, 64)
    found = SampleReader().masks({"x": signals, "blip_mask": torch.ones(2, 1, 64)}, signals)
    assert tuple(found["blip_mask"].shape) == (2, 64)
    volumes = torch.rand(2, 1, 8, 16, 16)
    found = SampleReader().masks({"x": volumes, "spot_mask": torch.ones(2, 1, 8, 16, 16)},
                                 volumes)
    assert tuple(found["spot_mask"].shape) == (2, 8, 16, 16)


def test_a_one_slice_volumes_mask_of_one_slice_is_accepted():
    from gradcam_callback.samples import SampleReader

    volumes = torch.rand(2, 1, 1, 16, 16)
    found = SampleReader().masks({"image": volumes, "spot_mask": torch.ones(2, 1, 16, 16)},
                                 volumes)
    assert tuple(found["spot_mask"].shape) == (2, 1, 16, 16)
