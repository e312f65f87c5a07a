"""`gradcam-callback explain` run as a subprocess, on a checkpoint made here."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch import Trainer, seed_everything
from PIL import Image

from gradcam_callback.cli import main
from tests.lit_helpers import CLASS_NAMES, LitTiny, StripeData, StripeDataset

ROOT = Path(__file__).resolve().parents[1]
NORMALISATION = ["--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A trained checkpoint, two stripe images, class names, and a plain resnet18 state_dict."""
    tmp = tmp_path_factory.mktemp("cli")
    seed_everything(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(max_epochs=3, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(LitTiny(), StripeData())
    trainer.save_checkpoint(tmp / "run.ckpt")
    data = StripeDataset(2, seed=5)
    for i, name in enumerate(("first.png", "second.png")):
        pixels = (data.images[i].clamp(0, 1) * 255).round().to(torch.uint8)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(tmp / name)
    (tmp / "names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (tmp / "broken.png").write_bytes(b"this is not an image")
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp / "resnet.pth")
    return tmp


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m gradcam_callback ...`` in a subprocess: the real entry point."""
    return subprocess.run([sys.executable, "-m", "gradcam_callback", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def run_here(*args: str) -> subprocess.CompletedProcess:
    """The same command in this process (seconds faster: no new interpreter, no imports)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["gradcam-callback", *args], code, out.getvalue(),
                                       err.getvalue())


def explain(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_here("explain", "--checkpoint", str(workdir / "run.ckpt"), "--model",
               "tests.lit_helpers:LitTiny", "--image", str(workdir / "first.png"),
               str(workdir / "second.png"), "--size", "32", *NORMALISATION, *extra)


def test_explains_images_from_a_lightning_checkpoint(workdir, tmp_path):
    result = explain(workdir, "--layer", "features", "--out", str(tmp_path),
                     "--class-names", str(workdir / "names.txt"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in ("first.png", "second.png"):
        prefix = f"{workdir / name}: predicted "
        line = next(line for line in lines if line.startswith(prefix))
        predicted, probability = line.removeprefix(prefix).split(" (p=")
        assert predicted in CLASS_NAMES and 0 < float(probability.rstrip(")")) <= 1
    assert any(name in result.stdout for name in CLASS_NAMES)
    for stem in ("first", "second"):
        for kind in ("heatmap", "overlay"):
            with Image.open(tmp_path / f"{stem}_{kind}.png") as picture:
                assert picture.size == (32, 32) and np.asarray(picture).std() > 5
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.width > 2 * 128 and grid.height > 2 * 128


def test_auto_detected_layer_is_printed(workdir, tmp_path):
    result = explain(workdir, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "layer: features (auto-detected)" in result.stdout


def test_target_label_and_class_index(workdir, tmp_path):
    by_label = explain(workdir, "--out", str(tmp_path / "a"), "--target", "label",
                       "--labels", "left", "right", "--class-names", str(workdir / "names.txt"))
    by_index = explain(workdir, "--out", str(tmp_path / "b"), "--target", "2")
    assert by_label.returncode == 0 and by_index.returncode == 0, by_label.stderr + by_index.stderr
    second_label = np.asarray(Image.open(tmp_path / "a" / "second_heatmap.png"))
    second_index = np.asarray(Image.open(tmp_path / "b" / "second_heatmap.png"))
    assert np.array_equal(second_label, second_index)  # "right" is class 2


def test_a_plain_module_with_weights(workdir, tmp_path):
    result = run_here("explain", "--model", "torchvision.models:resnet18", "--model-arg",
                 "num_classes=3", "--weights", str(workdir / "resnet.pth"), "--image",
                 str(workdir / "first.png"), "--size", "64", "--layer", "layer4",
                 "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "first_overlay.png").exists()


@pytest.mark.slow
def test_the_console_script_and_help_with_examples(workdir, tmp_path):
    script = Path(sys.executable).parent / "gradcam-callback"
    result = subprocess.run([str(script), "explain", "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--checkpoint run.ckpt" in result.stdout
    # the model's module ("tests", not installed) is imported from the working directory
    result = subprocess.run(
        [str(script), "explain", "--model", "tests.lit_helpers:LitTiny", "--checkpoint",
         str(workdir / "run.ckpt"), "--image", str(workdir / "first.png"), "--size", "32",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "first_overlay.png").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image": ["missing.png"]}, "--image: no such file: "),
        ({"--image": ["broken.png"]}, "--image: cannot read "),
        ({"--model": "nosuchpackage.models:Net"}, "cannot import module 'nosuchpackage.models'"),
        ({"--model": "tests.lit_helpers:Nope"}, "module 'tests.lit_helpers' has no 'Nope'"),
        ({"--model": "LitTiny"}, "--model must be MODULE:CLASS"),
        ({"--model-arg": "channels=1"}, "does not fit tests.lit_helpers:LitTiny"),
        ({"--checkpoint": "missing.ckpt"}, "--checkpoint: no such file"),
        ({"--layer": "featurs"}, "'featurs' is not a module of LitTiny. Closest names: 'features'"),
        ({"--target": "cat"}, "--target: 'cat' is not a class index"),
        ({"--target": "9"}, "target class 9 is out of range for a model with 3 outputs"),
        ({"--mean": ["0.5"], "--std": ["0.2"]}, "--mean and --std need 3 values each"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(workdir, tmp_path, change, message, capsys):
    options = {"--checkpoint": "run.ckpt", "--model": "tests.lit_helpers:LitTiny",
               "--image": ["first.png"], "--size": "32", "--out": str(tmp_path), **change}
    argv = ["explain"]
    for option, value in options.items():
        values = value if isinstance(value, list) else [value]
        if option in ("--checkpoint", "--image"):
            values = [str(workdir / v) for v in values]
        argv += [option, *values]
    assert main(argv) == 2  # in-process: the subprocess path is tested below
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradcam-callback: error: "), lines
    assert message in lines[0]


@pytest.mark.slow
def test_bad_input_from_the_real_entry_point(workdir, tmp_path):
    result = run("explain", "--model", "tests.lit_helpers:LitTiny", "--checkpoint",
                 str(workdir / "run.ckpt"), "--image", str(workdir / "broken.png"),
                 "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("gradcam-callback: error: --image: cannot read ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _sanity(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_here("sanity", "--checkpoint", str(workdir / "run.ckpt"), "--model",
                    "tests.lit_helpers:LitTiny", "--image", str(workdir / "first.png"),
                    str(workdir / "second.png"), "--size", "32", *NORMALISATION, *extra)


def test_sanity_on_a_checkpoint_prints_each_images_rank_correlation_and_a_verdict(workdir):
    gradcam = _sanity(workdir)
    assert gradcam.returncode == 0, gradcam.stderr
    lines = gradcam.stdout.splitlines()
    assert lines[0].startswith("layer: features; re-initialised: ")
    values = [float(line.rsplit(" ", 1)[1]) for line in lines
              if ": rank correlation " in line]
    assert len(values) == 2 and all(-1 <= v <= 1 for v in values)
    # Eigen-CAM does not use the head: the maps cannot change, and the verdict says so
    eigen = _sanity(workdir, "--method", "eigencam")
    assert eigen.returncode == 0, eigen.stderr
    assert "rank correlation 1.000" in eigen.stdout
    assert "warning: the maps barely change" in eigen.stdout


def test_sanity_refuses_layers_below_one(workdir):
    result = _sanity(workdir, "--layers", "0")
    assert result.returncode == 2 and "--layers must be at least 1, got 0" in result.stderr
