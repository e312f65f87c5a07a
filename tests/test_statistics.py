"""Many-sample statistics: means and spreads against their formulas, chunking, class maps,
the consistency scalar, sums across ranks (gloo), alarms, the display choice, and the
callback publishing to ``trainer.callback_metrics`` for EarlyStopping."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Subset

from gradcam_callback.engine.layers import earlier_spatial_layer as earlier_layer
from gradcam_callback.explainer import Explainer
from gradcam_callback.metrics import attention_scalars, location_consistency
from gradcam_callback.options import ExplainOptions
from gradcam_callback.samples import FixedSamples, choose_display, find_normalize
from gradcam_callback.statistics import (
    AttentionStatistics,
    Collectives,
    RankFailed,
    collect_statistics,
    parse_alarms,
)
from gradcam_callback.statistics.accumulator import cell_pixels
from gradcam_callback.synthetic import ShortcutShapes

HERE = Path(__file__).resolve().parent


def collect(model, read, indices, layer, *, chunk_size=64, reduce_sum=None, broadcast=None,
            rank=0, world=1):
    """The statistics of ``indices`` read by ``read`` (indices -> inputs, labels, masks),
    explained as the callback explains them; with the layer's name."""
    explainer = Explainer(ExplainOptions(target_layer=layer, batch_size=chunk_size))

    def explain_chunk(chunk):
        inputs, labels, masks = read(chunk)
        return (FixedSamples(list(chunk), inputs, labels, masks),
                explainer.explain(model, inputs, labels, primary_only=True))

    collectives = None if reduce_sum is None else Collectives(
        reduce_sum, lambda obj, src: broadcast(obj) if broadcast else obj, rank=rank,
        world_size=world)
    result = collect_statistics(explain_chunk, indices, chunk_size=chunk_size,
                                collectives=collectives)
    return result, explainer.layer_name


def known_batch(count: int = 12, size: int = 32, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cams = torch.rand(count, size, size, generator=g) ** 4
    logits = torch.randn(count, classes, generator=g)
    labels = torch.randint(classes, (count,), generator=g)
    masks = {"box_mask": torch.zeros(count, size, size, dtype=torch.bool)}
    masks["box_mask"][:, :8, :8] = True
    masks["box_mask"][::2, 20:, 20:] = True
    inputs = torch.rand(count, 3, size, size, generator=g)
    return cams, logits, labels, masks, inputs


def summarise(cams, logits, labels, masks, inputs, chunk: int) -> dict[str, float]:
    stats = AttentionStatistics()
    for start in range(0, len(cams), chunk):
        part = slice(start, start + chunk)
        stats.update(cams[part], (8, 8), inputs[part], logits[part], labels[part],
                     {k: v[part] for k, v in masks.items()})
    stats.reduce(lambda t: t, lambda obj, src: obj)
    return stats.result()


def test_means_std_and_ci95_are_the_formulas_and_do_not_depend_on_chunking():
    cams, logits, labels, masks, inputs = known_batch()
    result = summarise(cams, logits, labels, masks, inputs, chunk=5)
    expected = attention_scalars(cams, masks, tolerance=cell_pixels((32, 32), (8, 8)))
    for name, values in expected.items():
        values = values.double()
        std = values.std(unbiased=False).item()
        assert result.scalars[name] == pytest.approx(values.mean().item(), abs=1e-6)
        assert result.scalars[f"{name}_std"] == pytest.approx(std, abs=1e-6)
        assert result.scalars[f"{name}_ci95"] == pytest.approx(1.96 * std / math.sqrt(12),
                                                               rel=1e-3, abs=1e-9)
    whole = summarise(cams, logits, labels, masks, inputs, chunk=100)
    assert whole.scalars == pytest.approx(result.scalars)
    assert result.count == 12


def test_class_maps_are_the_mean_map_per_predicted_and_per_labelled_class():
    cams, logits, labels, masks, inputs = known_batch()
    result = summarise(cams, logits, labels, masks, inputs, chunk=4)
    predictions = logits.argmax(1)
    for c in range(3):
        assert int(result.prediction_counts[c]) == int((predictions == c).sum())
        assert int(result.label_counts[c]) == int((labels == c).sum())
        if (predictions == c).any():
            torch.testing.assert_close(result.by_prediction[c], cams[predictions == c].mean(0))
        if (labels == c).any():
            torch.testing.assert_close(result.by_label[c], cams[labels == c].mean(0))
    torch.testing.assert_close(result.mean_image, inputs.mean(0))


def test_location_consistency_matches_the_metric_grouped_by_prediction():
    cams, logits, labels, masks, inputs = known_batch(count=20)
    result = summarise(cams, logits, labels, masks, inputs, chunk=6)
    values = location_consistency(cams, logits.argmax(1)).double()
    values = values[~values.isnan()]
    assert result.scalars["location_consistency"] == pytest.approx(values.mean().item(),
                                                                   abs=1e-4)
    assert result.scalars["location_consistency_std"] == pytest.approx(
        values.std(unbiased=False).item(), abs=1e-3)


def test_location_consistency_streams_like_the_metric_with_lonely_and_constant_maps():
    cams, logits, labels, masks, inputs = known_batch(count=20)
    cams[3], cams[4] = 0.0, 0.5  # constant maps: no top cells, so they share nothing
    logits[:, 1:] = -10.0
    logits[7, 2] = 10.0  # sample 7 in class 2 with sample 4 only, whose map is constant
    logits[4, 2] = 10.0
    logits[8, 1] = 10.0  # sample 8 alone in class 1: no partner, left out
    cams[9, :16] *= 3.0  # a map whose top cells are another share of the image
    values = location_consistency(cams, logits.argmax(1)).double()
    assert values.isnan().nonzero().flatten().tolist() == [8]
    assert values[3] == 0 and values[4] == 0 and values[7] == 0
    values = values[~values.isnan()]
    for chunk in (1, 6, 20):
        result = summarise(cams, logits, labels, masks, inputs, chunk=chunk)
        assert result.scalars["location_consistency"] == pytest.approx(values.mean().item(),
                                                                       abs=1e-6)
        assert result.scalars["location_consistency_std"] == pytest.approx(
            values.std(unbiased=False).item(), abs=1e-6)


def in_threads(statistics: list[AttentionStatistics]) -> tuple[list, list[list[str]]]:
    """``reduce`` on each as one rank, in threads, with collectives that really add up
    across them; a rank left waiting breaks the barrier after 10 s instead of hanging."""
    barrier = threading.Barrier(len(statistics), timeout=10)
    slots: dict[int, list] = {}
    calls: list[list[str]] = [[] for _ in statistics]

    def collectives(rank: int):
        def reduce_sum(t):
            calls[rank].append(f"sum{t.numel()}")
            slots.setdefault(len(calls[rank]), []).append(t.clone())
            barrier.wait()
            total = sum(slots[len(calls[rank])])
            barrier.wait()
            return total

        def broadcast(obj, src):
            calls[rank].append("broadcast")
            if rank == src:
                slots[len(calls[rank])] = [obj]
            barrier.wait()
            got = slots[len(calls[rank])][0]
            barrier.wait()
            return got

        return reduce_sum, broadcast

    outcomes: list = [None] * len(statistics)

    def run(rank: int) -> None:
        try:
            statistics[rank].reduce(*collectives(rank), rank=rank,
                                    world_size=len(statistics))
        except Exception as error:
            outcomes[rank] = error

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(statistics))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, calls


def test_two_ranks_add_up_to_the_one_process_numbers_consistency_included():
    cams, logits, labels, masks, inputs = known_batch(count=15)
    single = summarise(cams, logits, labels, masks, inputs, chunk=4)
    ranks = [AttentionStatistics(), AttentionStatistics()]
    for rank, statistics in enumerate(ranks):
        share = slice(rank, None, 2)
        statistics.update(cams[share], (8, 8), inputs[share], logits[share], labels[share],
                          {k: v[share] for k, v in masks.items()})
    outcomes, calls = in_threads(ranks)
    assert outcomes == [None, None] and calls[0] == calls[1]
    # who has sums, the layout, the flag (it fits), the sums, the consistency's sums
    assert [c[:3] for c in calls[0]] == ["sum", "bro", "sum", "sum", "sum"]
    for statistics in ranks:
        result = statistics.result()
        assert result.count == 15
        # the consistency of each rank's samples is measured against both ranks' maps
        assert result.scalars == pytest.approx(single.scalars, abs=1e-6)


def test_a_rank_zero_without_sums_takes_the_layout_of_a_rank_that_has_them():
    """Rank zero may have no sample to add (all of its share had NaN outputs): the ranks
    then lay out their sums as the first rank that has some, and agree on the numbers."""
    cams, logits, labels, masks, inputs = known_batch(count=6)
    single = summarise(cams, logits, labels, masks, inputs, chunk=6)
    ranks = [AttentionStatistics(), AttentionStatistics()]
    ranks[1].update(cams, (8, 8), inputs, logits, labels, masks)
    outcomes, calls = in_threads(ranks)
    assert outcomes == [None, None] and calls[0] == calls[1]
    for statistics in ranks:
        assert statistics.result().count == 6
        assert statistics.result().scalars == pytest.approx(single.scalars, abs=1e-6)
    nobody = [AttentionStatistics(), AttentionStatistics()]
    outcomes, calls = in_threads(nobody)
    assert outcomes == [None, None] and calls == [["sum2"], ["sum2"]]  # nothing to add
    assert nobody[0].result().scalars == nobody[1].result().scalars == {}


def test_a_rank_whose_sums_do_not_fit_rank_zeros_layout_fails_with_it_no_rank_waits():
    cams, logits, labels, _, inputs = known_batch(count=8)
    ranks = [AttentionStatistics(), AttentionStatistics()]
    ranks[0].update(cams[:4], (8, 8), inputs[:4], logits[:4], labels[:4], {})
    small = torch.nn.functional.interpolate(inputs[4:], size=(24, 20))  # another image size
    ranks[1].update(cams[4:, :24, :20], (8, 8), small, logits[4:], labels[4:], {})
    outcomes, calls = in_threads(ranks)
    assert isinstance(outcomes[0], RankFailed) and "1 other rank" in str(outcomes[0])
    assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[1],
                                                                 threading.BrokenBarrierError)
    assert calls[0] == calls[1] == ["sum2", "broadcast", "sum1"]  # nobody went on to the sums


def test_a_fixed_corner_is_consistent_and_a_moving_blob_is_not():
    fixed = torch.zeros(8, 32, 32)
    fixed[:, :6, :6] = 1.0
    moving = torch.zeros(8, 32, 32)
    for i in range(8):
        moving[i, (i % 4) * 8 : (i % 4) * 8 + 6, (i // 4) * 16 : (i // 4) * 16 + 6] = 1.0
    logits = torch.zeros(8, 2)
    logits[:, 0] = 1.0
    for cams, expected in ((fixed, 1.0), (moving, 0.0)):  # the blobs never overlap
        stats = AttentionStatistics()
        stats.update(cams, (32, 32), torch.zeros(8, 1, 32, 32), logits, None, {})
        stats.reduce(lambda t: t, lambda obj, src: obj)
        assert stats.result().scalars["location_consistency"] == pytest.approx(expected,
                                                                               abs=0.02)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.features(x))


def reader(data: ShortcutShapes):
    def read(indices):
        items = [data[i] for i in indices]
        masks = {k: torch.stack([it[k] for it in items]) for k in ("object_mask",
                                                                     "shortcut_mask")}
        return (torch.stack([it["image"] for it in items]),
                torch.stack([it["label"] for it in items]), masks)

    return read


def test_collect_statistics_in_chunks_equals_one_pass_and_knows_the_layer_size():
    torch.manual_seed(0)
    model = Tiny()
    data = ShortcutShapes(10, image_size=32, seed=3)
    one, name = collect(model, reader(data), range(10), "features", chunk_size=10)
    chunked, _ = collect(model, reader(data), range(10), "features", chunk_size=3)
    assert name == "features" and one.layer_size == (2, 2) and one.input_size == (32, 32)
    assert one.cell_pixels == 16
    assert chunked.scalars == pytest.approx(one.scalars, abs=1e-5)


def test_earlier_layer_names_a_layer_with_at_least_four_cells_and_leaves_no_hooks():
    model = Tiny()
    assert earlier_layer(model, torch.rand(1, 3, 32, 32), "features") == "features.4"
    assert earlier_layer(model, torch.rand(1, 3, 32, 32), "features.5") == "features.4"
    assert all(not m._forward_hooks for m in model.modules())


def gloo_sum(t):
    """The statistics' ``reduce_sum`` over a real process group."""
    dist.all_reduce(t)
    return t


def gloo_broadcast(obj, src=0):
    """The statistics' ``broadcast`` of rank ``src``'s object over a real process group."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = Tiny()
    data = ShortcutShapes(9, image_size=32, seed=3)

    result, _ = collect(model, reader(data), range(rank, 9, world), "features",
                        chunk_size=2, reduce_sum=gloo_sum, broadcast=gloo_broadcast,
                        rank=rank, world=world)
    torch.save({"scalars": result.scalars, "count": result.count,
                "by_prediction": result.by_prediction}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_with_uneven_shares_give_the_one_process_numbers(tmp_path):
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    model = Tiny()
    single, _ = collect(model, reader(ShortcutShapes(9, image_size=32, seed=3)),
                                   range(9), "features", chunk_size=4)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["count"] == 9
        assert got["scalars"] == pytest.approx(single.scalars, abs=1e-5)
        torch.testing.assert_close(got["by_prediction"], single.by_prediction)


def _failing_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank 1 cannot read its share; both ranks must leave the statistics together."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    data = ShortcutShapes(9, image_size=32, seed=3)
    read = reader(data)

    def read_or_fail(indices):
        if rank == 1:
            raise ValueError("rank 1 cannot read its samples")
        return read(indices)

    try:
        collect(Tiny(), read_or_fail, range(rank, 9, world), "features",
                chunk_size=2, reduce_sum=gloo_sum, broadcast=gloo_broadcast, rank=rank,
                world=world)
        outcome = "returned"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    step = torch.tensor([float(rank + 1)])
    dist.all_reduce(step)  # both ranks are still in step: the next collective adds up
    Path(out, f"rank{rank}.txt").write_text(f"{outcome}\n{step.item()}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_rank_whose_statistics_fail_takes_the_other_rank_with_it_and_nothing_hangs(tmp_path):
    port = 29500 + (os.getpid() + 500) % 1000
    context = mp.spawn(_failing_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    finished = False  # join() returns as soon as one process ends: wait for both
    while not finished and time.monotonic() < deadline:
        finished = context.join(timeout=max(1.0, deadline - time.monotonic()))
    if not finished:
        for process in context.processes:
            process.kill()
    assert finished, "a rank hung in the statistics' collectives"
    outcome = {r: (tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)}
    assert outcome[1] == ["ValueError: rank 1 cannot read its samples", "3.0"]
    assert outcome[0][0].startswith("RankFailed: the statistics failed on 1 other rank(s)")
    assert outcome[0][1] == "3.0"


def test_the_ranks_agree_on_failure_before_any_sum():
    """One collective comes first: the share of ranks that failed. A failing rank reports
    itself there and raises its own error; a rank told of another's failure raises
    RankFailed; neither goes on to the sums (which the other rank would never join)."""
    data = ShortcutShapes(4, image_size=32, seed=3)
    seen: list[list[float]] = []

    def collectives(others_failed: float):
        def reduce_sum(t):
            seen.append(t.tolist())
            return t + others_failed if len(seen) == 1 else t

        def broadcast(obj):
            seen.append(["broadcast"])
            return obj

        return reduce_sum, broadcast

    def broken(indices):
        raise OSError("disk gone")

    reduce_sum, broadcast = collectives(0.0)
    with pytest.raises(OSError, match="disk gone"):
        collect(Tiny(), broken, range(4), "features", reduce_sum=reduce_sum,
                           broadcast=broadcast)
    assert seen == [[1.0]]

    seen.clear()
    reduce_sum, broadcast = collectives(1.0)
    with pytest.raises(RankFailed, match="1 other rank"):
        collect(Tiny(), reader(data), range(4), "features", reduce_sum=reduce_sum,
                           broadcast=broadcast)
    assert seen == [[0.0]]

    seen.clear()
    reduce_sum, broadcast = collectives(0.0)
    result, _ = collect(Tiny(), reader(data), range(4), "features",
                                   reduce_sum=reduce_sum, broadcast=broadcast)
    # flag, who has sums, layout, flag (the layout fits), the sums, the consistency's sum
    assert seen[:4] == [[0.0], [1.0], ["broadcast"], [0.0]] and len(seen) == 6
    assert result.count == 4


def test_alarms_parse_and_fire():
    alarms = parse_alarms({"lift/watermark_mask": ">2", "gradcam/layer4/border_lift": "<= 0.5",
                           "location_consistency": ">=0.9"})
    assert [(a.metric, a.op, a.threshold) for a in alarms] == [
        ("lift/watermark_mask", ">", 2.0), ("border_lift", "<=", 0.5),
        ("location_consistency", ">=", 0.9)]
    assert alarms[0].fires(2.5) and not alarms[0].fires(2.0) and not alarms[0].fires(math.nan)
    assert alarms[1].fires(0.5) and not alarms[1].fires(0.51)
    for bad in ("2", ">", "> two", "=2"):
        with pytest.raises(ValueError, match=r"alarms\['x'\]="):
            parse_alarms({"x": bad})
    with pytest.raises(TypeError, match="alarms="):
        parse_alarms(["lift/x>2"])


def test_display_takes_mean_std_from_a_normalize_in_the_dataset_else_scales_jointly():
    import torchvision.transforms as T
    import torchvision.transforms.v2 as V

    class Data:
        transform = T.Compose([T.ToTensor(), T.Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])])

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(3, 4, 4)

    assert find_normalize(Subset(Data(), [0, 1])) == ([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])

    class DataV2:
        transform = V.Compose([V.ToDtype(torch.float32), V.Normalize([0.1], [0.3])])

    assert find_normalize(DataV2()) == ([0.1], [0.3])
    display = choose_display(None, None, Data())
    assert (display.mean, display.joint) == ([0.5, 0.4, 0.3], False)
    assert "Normalize" in display.source
    plain = choose_display(None, None, object())
    assert plain.mean is None and plain.joint and "jointly" in plain.source
    given = choose_display([0.0], [1.0], Data())
    assert given.mean == [0.0]


def test_callback_publishes_scalars_early_stopping_monitors_them_and_alarms_stop(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    from gradcam_callback import GradCAMCallback
    from tests.lit_helpers import LitTiny, ShapesData
    from tests.test_callback import fit

    gradcam = GradCAMCallback("features", num_samples=2, metric_samples=8, metric_batch_size=3,
                              alarms={"lift/shortcut_mask": ">=0"}, alarm_action="stop")
    stopper = EarlyStopping(monitor="gradcam/features/lift/object_mask", mode="max",
                            patience=5, check_on_train_epoch_end=False)
    with pytest.warns(UserWarning, match=r"alarm: lift/shortcut_mask = [0-9.]+ at epoch 0"):
        trainer, _ = fit(tmp_path, [gradcam, stopper], max_epochs=4, data=ShapesData(),
                         model=LitTiny)
    assert trainer.current_epoch == 1  # stopped by the alarm after the first epoch
    metrics = trainer.callback_metrics
    logged = gradcam.last_metrics
    for name in ("lift/object_mask", "lift/object_mask_std", "lift/object_mask_ci95",
                 "border_lift", "location_consistency", "area/shortcut_mask"):
        tag = "gradcam/features/" + name
        assert float(metrics[tag]) == pytest.approx(logged[tag])
    assert logged["gradcam/features/metric_samples"] == 8
    assert float(stopper.best_score) == pytest.approx(logged["gradcam/features/lift/object_mask"])
    # the shortcut patch is a quarter of the side: 1/16 of the image
    assert logged["gradcam/features/area/shortcut_mask"] == pytest.approx(1 / 16)
    picture = gradcam.last_class_maps
    assert picture is not None and picture.dtype == torch.uint8 and picture.shape[0] == 3


@pytest.mark.slow
def test_ddp_two_processes_agree_on_the_monitored_value_and_stop_together(tmp_path):
    from tests.lit_helpers import run_ddp_script

    ranks = run_ddp_script("ddp_statistics_script.py", tmp_path)
    assert ranks[0]["values"] == ranks[1]["values"] and ranks[0]["values"]
    assert ranks[0]["epoch"] == ranks[1]["epoch"] == 1  # the alarm stopped both ranks
    assert ranks[0]["count"] == ranks[1]["count"] == 24  # both ranks' shares, added


def test_a_too_coarse_layer_warns_once_naming_an_earlier_layer(tmp_path):
    from gradcam_callback import GradCAMCallback
    from tests.lit_helpers import LitTiny
    from tests.test_callback import fit

    def coarse():  # built after fit's seed
        model = LitTiny()
        model.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                       nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                                       nn.ReLU(), nn.MaxPool2d(8))  # 32 px -> 2x2
        return model

    gradcam = GradCAMCallback("features", num_samples=2, metric_samples=8)
    with pytest.warns(UserWarning, match=r"'features' gives 2x2 maps for 32x32 inputs: too "
                                         r"coarse.*target_layer='features.4'") as caught:
        fit(tmp_path, [gradcam], max_epochs=2, model=coarse)
    assert sum("too coarse" in str(w.message) for w in caught) == 1
    assert gradcam.last_statistics.layer_size == (2, 2)


def test_class_maps_picture_puts_each_class_map_in_its_column_on_one_scale():
    from gradcam_callback.render.class_maps import class_maps_grid

    maps = torch.zeros(3, 8, 8)
    maps[0, :2, :2] = 1.0  # class 0: top-left
    maps[2, 6:, 6:] = 0.5  # class 2: bottom-right, half as strong
    counts = torch.tensor([4, 0, 2])
    picture = class_maps_grid([("by prediction", maps, counts)], None, ["a", "b", "c"],
                              tile_size=40, colormap="gray")
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3
    # the columns are 40 px tiles after the row title; find them by their bright pixels
    height = picture.shape[1]
    gray = picture.float().mean(0)[height - 40 - 12 : height - 12]  # the row of tiles
    white = (gray >= 250).nonzero()  # full scale: only class 0's corner (text is 235)
    assert len(white) > 0
    assert white[:, 1].max() - white[:, 1].min() < 40  # all in one tile: class 0's
    assert white[:, 0].max() < 20  # in the tile's top half
    right = white[:, 1].max()
    mid = ((gray > 110) & (gray < 150)).nonzero()
    mid = mid[mid[:, 1] > right + 20]  # class 2: half the scale, two columns right
    assert len(mid) > 0 and mid[:, 1].min() > right + 40 and mid[:, 0].min() >= 20
