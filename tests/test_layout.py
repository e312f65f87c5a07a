"""The layout's promises: what each import loads, the method registry, chunked explaining,
the shared argument checks, the pure ops, and where each kind of logger sends pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcam_callback import _checks, compute_cam, explain_batch, register_method
from gradcam_callback.engine import available_methods, get_method
from gradcam_callback.ops import min_max, resize_maps, shrink_maps

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("PIL", "lightning", "matplotlib", "lightning.pytorch", "pytorch_lightning")


def modules_loaded_by(statement: str) -> set[str]:
    """The heavy modules in sys.modules after running ``statement`` in a fresh interpreter."""
    code = (f"import sys, json\n{statement}\n"
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_each_layer_imports_only_what_it_needs():
    assert modules_loaded_by("import gradcam_callback") == set()
    assert modules_loaded_by("from gradcam_callback import compute_cam, explain_batch") == set()
    assert modules_loaded_by("import gradcam_callback.metrics, gradcam_callback.ops") == set()
    render = modules_loaded_by("import gradcam_callback.render")
    assert "PIL" in render and not render & {"lightning", "lightning.pytorch"}
    assert modules_loaded_by("from gradcam_callback import GradCAMCallback") >= {
        "lightning", "PIL"}


def test_a_registered_method_works_in_compute_cam_and_the_callback(tiny_cnn, images):
    def channel_zero(acts, grads):  # the first channel's activation, ignoring gradients
        return acts[:, 0]

    register_method("channel-zero-test", channel_zero, needs_gradients=False, title="Ch0",
                    replace=True)
    assert "channel-zero-test" in available_methods()
    assert get_method("channel-zero-test").title == "Ch0"
    maps = compute_cam(tiny_cnn, images, "features", method="channel-zero-test",
                       output_size=None, normalize=False)
    captured = {}
    handle = tiny_cnn.features.register_forward_hook(
        lambda m, i, o: captured.setdefault("out", o.detach().clone()))
    with torch.no_grad():
        tiny_cnn.eval()(images)
    handle.remove()
    torch.testing.assert_close(maps, captured["out"][:, 0].relu())

    from gradcam_callback import GradCAMCallback

    assert GradCAMCallback(method="channel-zero-test").method == "channel-zero-test"
    with pytest.raises(ValueError, match=r"name='channel-zero-test': a method of that name"):
        register_method("channel-zero-test", channel_zero)


def test_unknown_method_names_suggest_the_closest_everywhere(tiny_cnn, images):
    with pytest.raises(ValueError, match=r"^method='eigencan': valid values are .*"
                                         r"Did you mean 'eigencam'\?"):
        compute_cam(tiny_cnn, images, "features", method="eigencan")
    from gradcam_callback import GradCAMCallback

    with pytest.raises(ValueError, match=r"Did you mean 'layercam'\?"):
        GradCAMCallback(method="layercan")
    with pytest.raises(TypeError, match=r"^method=None: must be one of"):
        get_method(None)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "eigencam"])
def test_explaining_in_chunks_gives_the_same_maps_and_logits(tiny_cnn, method):
    inputs = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([4, 0, 3, 1, 2])
    whole = explain_batch(tiny_cnn, inputs, "features", targets, method=method)
    for batch_size in (1, 2, 4):
        chunked = explain_batch(tiny_cnn, inputs, "features", targets, method=method,
                                batch_size=batch_size)
        torch.testing.assert_close(chunked.cams, whole.cams, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(chunked.logits, whole.logits)
    as_list = compute_cam(tiny_cnn, inputs, "features", targets.tolist(), method=method,
                         batch_size=2)
    torch.testing.assert_close(as_list, whole.cams, atol=1e-5, rtol=1e-5)
    if method != "eigencam":  # the per-sample targets are honoured in every chunk
        other = compute_cam(tiny_cnn, inputs, "features", 0, method=method, batch_size=2)
        assert not torch.allclose(other[2:4], whole.cams[2:4])


# ----- _checks: one wording, TypeError for a type, ValueError for a value -----------------

def test_bools_are_not_numbers_and_numpy_scalars_are():
    with pytest.raises(TypeError, match=r"^n=True: must be an int >= 1, got bool"):
        _checks.check_int("n", True, minimum=1)
    with pytest.raises(TypeError, match=r"^alpha=False: must be a finite number"):
        _checks.check_float("alpha", False)
    assert _checks.check_int("n", np.int64(3), minimum=1) == 3
    assert type(_checks.check_int("n", np.int64(3))) is int
    assert _checks.check_float("alpha", np.float32(0.25)) == 0.25
    assert _checks.check_float("alpha", 1) == 1.0
    assert _checks.is_number(np.float32(1)) and not _checks.is_number(True)
    with pytest.raises(TypeError, match=r"^n=2.0: must be an int, got float"):
        _checks.check_int("n", 2.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_rejected(bad):
    with pytest.raises(ValueError, match=r"^alpha=(nan|inf|-inf): must be a finite number"):
        _checks.check_float("alpha", bad)
    with pytest.raises(ValueError, match=r"^mean=(nan|inf|-inf): must be a finite number"):
        _checks.check_mean_std([0.5, bad], [1.0, 1.0])


def test_ranges_are_checked_with_their_bounds_in_the_message():
    assert _checks.check_float("a", 0.0, minimum=0.0) == 0.0
    with pytest.raises(ValueError, match=r"^a=0.0: must be a finite number > 0.0$"):
        _checks.check_float("a", 0.0, minimum=0.0, exclusive_minimum=True)
    with pytest.raises(ValueError, match=r"^n=11: must be an int in \[1, 10\]$"):
        _checks.check_int("n", 11, minimum=1, maximum=10)
    assert _checks.check_int("n", None, allow_none=True) is None


def test_strings_are_not_lists():
    with pytest.raises(TypeError, match=r"^names='cat': must be a list of strings, got str "
                                        r"\(did you mean \['cat'\]\?\)"):
        _checks.check_str_sequence("names", "cat")
    with pytest.raises(TypeError, match=r"^idx='12': must be a list of ints"):
        _checks.check_int_sequence("idx", "12")
    with pytest.raises(TypeError, match=r"every item must be a string, got 3"):
        _checks.check_str_sequence("names", ["a", 3])
    with pytest.raises(TypeError, match=r"every item must be an int, got True"):
        _checks.check_int_sequence("idx", [1, True])
    with pytest.raises(ValueError, match=r"^idx=\[2, 1, 2\]: 2 appears more than once"):
        _checks.check_int_sequence("idx", [2, 1, 2])
    assert _checks.check_int_sequence("idx", (np.int64(4), 0)) == [4, 0]
    assert _checks.check_str_sequence("names", ("a", "b")) == ["a", "b"]


def test_choices_suggest_the_closest_and_types_raise_type_error():
    with pytest.raises(ValueError, match=r"^fmt='jpg': valid values are 'png', 'jpeg'\. "
                                         r"Did you mean 'jpeg'\?"):
        _checks.check_choice("fmt", "jpg", ("png", "jpeg"))
    with pytest.raises(TypeError, match=r"^fmt=1: must be one of 'png', 'jpeg', got int"):
        _checks.check_choice("fmt", 1, ("png", "jpeg"))
    with pytest.raises(TypeError, match=r"^flag='no': must be True or False, got str"):
        _checks.check_bool("flag", "no")
    with pytest.raises(TypeError, match=r"^fn='pkg.f': must be a callable or None.*import path"):
        _checks.check_callable("fn", "pkg.f")


def test_mean_and_std_broadcast_one_value_and_accept_arrays():
    assert _checks.check_mean_std(0.5, [0.2, 0.3]) == ([0.5, 0.5], [0.2, 0.3])
    means, stds = _checks.check_mean_std(np.array([0.1, 0.2, 0.3]),
                                         torch.tensor([1.0, 2.0, 4.0])) or ([], [])
    assert means == pytest.approx([0.1, 0.2, 0.3]) and stds == [1.0, 2.0, 4.0]
    assert _checks.check_mean_std([0.5], [0.25], channels=3) == ([0.5] * 3, [0.25] * 3)
    assert _checks.check_mean_std(None, None) is None
    with pytest.raises(TypeError, match=r"^mean='0.5': must be a number or a list"):
        _checks.check_mean_std("0.5", [1.0])
    with pytest.raises(ValueError, match=r"^std=\[1.0, -1.0\]: every value must be > 0"):
        _checks.check_mean_std([0.0, 0.0], [1.0, -1.0])


# ----- ops: pure tensor functions -----------------------------------------------------------

def test_min_max_scales_each_sample_on_its_own_and_constant_maps_become_zero():
    maps = torch.stack([torch.linspace(2, 4, 6).view(2, 3), torch.linspace(-1, 9, 6).view(2, 3),
                        torch.full((2, 3), 7.0)])
    scaled = min_max(maps)
    for i in range(2):
        expected = (maps[i] - maps[i].min()) / (maps[i].max() - maps[i].min())
        torch.testing.assert_close(scaled[i], expected)
    assert torch.equal(scaled[2], torch.zeros(2, 3))
    joint = min_max(maps, start_dim=0)
    torch.testing.assert_close(joint, (maps + 1) / 10)


def test_resize_and_shrink_keep_what_is_already_the_right_size():
    maps = torch.rand(2, 5, 7)
    assert resize_maps(maps, (5, 7)) is maps
    assert shrink_maps(maps, 64) is maps
    assert shrink_maps(torch.rand(1, 200, 100), 64).shape == (1, 64, 32)
    assert shrink_maps(torch.rand(1, 300, 2), 64).shape == (1, 64, 1)
    constant = torch.full((1, 128, 128), 0.3)
    torch.testing.assert_close(shrink_maps(constant, 32), torch.full((1, 32, 32), 0.3))


# ----- samples: what counts as labels and masks ---------------------------------------------

def test_a_multiclass_task_reads_class_indices_one_hot_rows_and_nothing_else():
    from gradcam_callback.samples import SampleReader
    from gradcam_callback.tasks import Task

    reader, task = SampleReader(), Task("multiclass", 3)
    images = torch.zeros(3, 3, 8, 8)
    _, labels = reader.split((images, torch.tensor([2, 0, 1])))
    assert task.labels(labels)[0].tolist() == [2, 0, 1]
    # the reader keeps labels as the batch holds them; the task reads them
    for as_classes in (torch.eye(3)[[2, 0, 1]], torch.tensor([2.0, 0.0, 1.0]),
                       torch.tensor([[2], [0], [1]])):
        raw = reader.split((images, as_classes))[1]
        assert torch.equal(raw, as_classes)
        assert task.labels(raw)[0].tolist() == [2, 0, 1]
    for not_classes in (torch.tensor([True, False, True]), torch.tensor([0.5, 1.0, 2.0]),
                        torch.full((3, 3), 1 / 3)):
        labels, note = task.labels(not_classes)
        assert labels is None and "not class indices" in note
    with pytest.raises(ValueError, match=r"multi-hot .* task='multilabel'"):
        task.labels(torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 0]]))
    assert reader.split((images, torch.zeros(2)))[1] is None  # not one row per input
    assert reader.split({"image": images, "label": torch.tensor([1, 1, 1])})[1].tolist() == [1] * 3
    with pytest.raises(ValueError, match=r"^input_key='image': the batch is a dict with keys"):
        reader.split({"pixels": images})


def test_soft_masks_count_above_one_half_and_bad_discovered_keys_are_skipped():
    from gradcam_callback.samples import SampleReader

    images = torch.zeros(2, 3, 4, 4)
    soft = torch.tensor([0.2, 0.5, 0.51, 1.0]).view(1, 1, 1, 4).expand(2, 1, 4, 4)
    from gradcam_callback.notices import Notices

    warnings_seen = []
    notices = Notices(warnings_seen.append)
    masks = SampleReader().masks({"image": images, "soft_mask": soft, "id_mask": [1, 2]},
                                 images, notices)
    assert list(masks) == ["soft_mask"] and masks["soft_mask"].shape == (2, 4, 4)
    assert masks["soft_mask"][0, 0].tolist() == [False, False, True, True]
    assert len(warnings_seen) == 1 and notices.said("not_mask_id_mask")
    assert "skipping batch key 'id_mask'" in warnings_seen[0]


# ----- history -----------------------------------------------------------------------------

def test_history_fit_to_resizes_a_new_image_size_and_clears_a_new_sample_count():
    from gradcam_callback.history import History

    history = History()
    assert history.fit_to(3, (32, 32))  # empty: nothing to fit
    for epoch in range(2):
        history.add(torch.rand(3, 16, 16), epoch, 10 * epoch)
    assert history.fit_to(3, (32, 32)) and history.maps.shape == (2, 3, 32, 32)
    assert history.fit_to(3, (256, 128)) and history.maps.shape == (2, 3, 64, 32)
    assert history.epochs == [0, 1]
    for count in (4, 2):  # more samples or fewer: the old maps cannot be compared
        history.clear()
        history.add(torch.rand(3, 16, 16), 0, 0)
        assert not history.fit_to(count, (32, 32))
        assert len(history) == 0 and history.epochs == [] and history.steps == []


def test_history_state_round_trips_and_reads_the_old_keys():
    from gradcam_callback.history import History

    history = History()
    for epoch in range(3):
        history.add(torch.rand(2, 8, 8), epoch, 4 * epoch)
    state = history.state_dict()
    restored = History()
    restored.load_state_dict(state)
    assert restored.epochs == [0, 1, 2] and restored.steps == [0, 4, 8]
    assert torch.equal(restored.maps, history.maps)
    old = History()
    old.load_state_dict({"history_epochs": [5], "history_steps": [50],
                         "history_maps": state["maps"][:1]})
    assert old.epochs == [5] and old.steps == [50] and len(old) == 1


# ----- sinks: one per logger kind ----------------------------------------------------------

def test_each_logger_kind_gets_its_sink(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning.pytorch.loggers.logger import DummyLogger

    from gradcam_callback.lightning.sinks import FileSink, TensorBoardSink, image_sinks

    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    csv = CSVLogger(tmp_path, name="csv")
    sinks = image_sinks([tensorboard, csv, DummyLogger()], None, "png")
    assert [type(s) for s in sinks] == [TensorBoardSink, FileSink]
    assert sinks[1].directory == Path(csv.log_dir) / "gradcam"
    only_tb = image_sinks([tensorboard], None, "jpeg")
    assert [type(s) for s in only_tb] == [TensorBoardSink]
    chosen = image_sinks([tensorboard], tmp_path / "pictures", "jpeg")
    assert [type(s) for s in chosen] == [TensorBoardSink, FileSink]
    assert chosen[1].directory == tmp_path / "pictures" / "version_0"  # one folder per run
    assert image_sinks([DummyLogger()], None, "png") == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # choosing sinks writes no file


def test_a_file_sink_writes_the_exact_picture(tmp_path):
    from PIL import Image

    from gradcam_callback.lightning.sinks import FileSink

    picture = torch.randint(0, 256, (3, 10, 14), dtype=torch.uint8)
    sink = FileSink(tmp_path / "out", "png")
    sink.log_image("gradcam/blocks.3/overlay", picture, 42)
    path = tmp_path / "out" / "blocks.3_overlay_step0000042.png"
    assert sink.path_for("gradcam/blocks.3/overlay", 42) == path
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), picture.permute(1, 2, 0).numpy())
    assert FileSink(tmp_path, "jpeg").path_for("gradcam/x/filmstrip", 7).name == \
        "x_filmstrip_step0000007.jpg"


def test_other_tensorboard_writers_get_add_image():
    from gradcam_callback.lightning.sinks import write_image_summary

    class Writer:
        def __init__(self):
            self.calls = []

        def add_image(self, tag, picture, global_step, dataformats):
            self.calls.append((tag, picture, global_step, dataformats))

    writer = Writer()
    picture = torch.zeros(3, 4, 4, dtype=torch.uint8)
    write_image_summary(writer, "gradcam/x/overlay", picture, 5)
    assert len(writer.calls) == 1
    tag, logged, step, dataformats = writer.calls[0]
    assert (tag, step, dataformats) == ("gradcam/x/overlay", 5, "CHW") and logged is picture


def test_summary_writer_gets_the_encoded_picture(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from gradcam_callback.lightning.sinks import write_image_summary

    picture = torch.randint(0, 256, (3, 6, 9), dtype=torch.uint8)
    with SummaryWriter(tmp_path) as writer:
        write_image_summary(writer, "gradcam/x/overlay", picture, 3, "png")
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    (event,) = events.Images("gradcam/x/overlay")
    assert (event.step, event.width, event.height) == (3, 9, 6)
    from gradcam_callback.render import encode_image

    assert event.encoded_image_string == encode_image(picture, "png")
