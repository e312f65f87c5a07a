"""Every logger a Lightning user has gets the pictures and the scalars, read back from its store.

No network: W&B runs offline (the run's ``.wandb`` file and ``files/media`` are read back),
MLflow uses a local sqlite store and artifact folder.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradcam_callback import GradCAMCallback
from gradcam_callback.lightning.sinks import (
    FileSink,
    WandbSink,
    claim_run_directory,
    image_sinks,
)
from gradcam_callback.render import (
    annotated_grid,
    explanation_grid,
    filmstrip,
    resize_tiles,
    run_header,
    to_display,
)
from gradcam_callback.render.grid import BACKGROUND, NO_EVIDENCE, TEXT
from tests.lit_helpers import CLASS_NAMES, LitTiny, StripeData

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
         "enable_checkpointing": False}
OVERLAY = "gradcam/features/overlay"
STEPS = [6, 12]  # 96 training samples, batches of 16, two epochs
TAB_CARD_PX = 320  # TensorBoard's image cards shrink wider pictures to about this width


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
        yield


def fit(root: Path, logger: Any, max_epochs: int = 2, data: StripeData | None = None,
        **options: Any) -> tuple[Trainer, GradCAMCallback]:
    seed_everything(0)
    options = {"num_samples": 3, "image_format": "png", **options}
    callback = GradCAMCallback("features", **options)
    trainer = Trainer(max_epochs=max_epochs, logger=logger, callbacks=[callback],
                      default_root_dir=root, **QUIET)
    trainer.fit(LitTiny(), data or StripeData())
    return trainer, callback


def as_tensor(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture.convert("RGB")).copy()).permute(2, 0, 1)


def read_picture(data: bytes | Path) -> torch.Tensor:
    blob = data.read_bytes() if isinstance(data, Path) else data
    with Image.open(io.BytesIO(blob)) as picture:
        return as_tensor(picture)


def header_of(picture: torch.Tensor, text: str) -> bool:
    """Whether ``picture`` starts with exactly the header line ``text``.

    The header band is rendered the same way on a one-tile grid; its text pixels (left of
    the text's end, above the captions) must match the picture's pixel for pixel.
    """
    reference = annotated_grid([torch.zeros(1, 3, 128, 128, dtype=torch.uint8)], [""], [[]],
                               header=text)
    band = reference[:, :30, : min(reference.shape[2], picture.shape[2])]
    return bool(torch.equal(picture[:, :30, : band.shape[2]], band))


# --- TensorBoard ----------------------------------------------------------------------------


def test_tensorboard_gets_grids_with_their_epoch_and_step_and_the_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    _, callback = fit(tmp_path, logger)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    grids = events.Images(OVERLAY)
    assert [e.step for e in grids] == STEPS
    first, last = (read_picture(e.encoded_image_string) for e in grids)
    assert header_of(first, "epoch 0 · step 6") and header_of(last, "epoch 1 · step 12")
    assert not header_of(last, "epoch 0 · step 12")  # the check can tell epochs apart
    assert torch.equal(last, callback.last_grid)
    border = {e.step: e.value for e in events.Scalars("gradcam/features/border_energy")}
    assert sorted(border) == STEPS
    assert border[12] == pytest.approx(callback.last_metrics["gradcam/features/border_energy"])
    strip = read_picture(events.Images("gradcam/features/filmstrip")[0].encoded_image_string)
    assert header_of(strip, "filmstrip · epochs 0-1 · step 12")


def test_per_sample_images_fit_tensorboards_card_at_actual_size(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    _, callback = fit(tmp_path, logger, per_sample_images=True)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = sorted(t for t in events.Tags()["images"] if "/overlay" in t)
    assert tags == [f"{OVERLAY}/sample_{i}" for i in range(3)]
    lasts = []
    for tag in tags:
        pictures = [read_picture(e.encoded_image_string) for e in events.Images(tag)]
        assert [e.step for e in events.Images(tag)] == STEPS
        assert header_of(pictures[-1], "epoch 1 · step 12")
        # shown 1:1 in a ~320 px card: 13 px captions stay 13 px on screen
        assert pictures[-1].shape[2] <= TAB_CARD_PX
        lasts.append(pictures[-1])
    assert not torch.equal(lasts[0], lasts[1]) and not torch.equal(lasts[1], lasts[2])
    # each is the grid's column of its sample: the same tiles, side by side in the grid
    tile_rows = slice(lasts[0].shape[1] - 128 - 6, lasts[0].shape[1] - 6)
    grid_last_tile = callback.last_grid[:, tile_rows, -128 - 6 : -6]
    assert torch.equal(lasts[2][:, tile_rows, -128 - 6 : -6], grid_last_tile)
    # the grid of the same run (not logged) is several times wider: it would be shrunk
    assert callback.last_grid.shape[2] > 1.5 * TAB_CARD_PX


# --- CSV and files --------------------------------------------------------------------------


def test_csv_logger_rows_carry_their_epoch_and_pictures_are_in_the_run_folder(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    _, callback = fit(tmp_path, logger, image_format="jpeg")
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("gradcam/features/border_energy")]
    assert [(int(r["step"]), int(float(r["epoch"]))) for r in rows] == [(6, 0), (12, 1)]
    assert float(rows[-1]["gradcam/features/border_energy"]) == pytest.approx(
        callback.last_metrics["gradcam/features/border_energy"], abs=1e-6)
    folder = Path(logger.log_dir) / "gradcam"
    assert sorted(p.name for p in folder.iterdir()) == [
        "features_class_maps_step0000006.jpg", "features_class_maps_step0000012.jpg",
        "features_filmstrip_step0000012.jpg", "features_overlay_step0000006.jpg",
        "features_overlay_step0000012.jpg"]
    last = read_picture(folder / "features_overlay_step0000012.jpg")
    assert last.shape == callback.last_grid.shape
    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).abs().mean())

    # JPEG (quality 90) of noisy tiles: close to the grid, far from another picture
    assert distance(last, callback.last_grid) < 0.5 * distance(last, last.flip(2))
    assert not (tmp_path / "gradcam").exists()  # nothing in a shared folder


def test_two_runs_without_logger_never_overwrite_each_other(tmp_path):
    images = tmp_path / "pictures"
    fit(tmp_path / "a", False, max_epochs=1, image_dir=str(images))
    fit(tmp_path / "b", False, max_epochs=2, image_dir=str(images))
    first, second = images / "version_0", images / "version_1"
    assert sorted(p.name for p in first.iterdir()) == [
        "features_class_maps_step0000006.png", "features_filmstrip_step0000006.png",
        "features_overlay_step0000006.png"]
    assert sorted(p.name for p in second.iterdir()) == [
        "features_class_maps_step0000006.png", "features_class_maps_step0000012.png",
        "features_filmstrip_step0000012.png", "features_overlay_step0000006.png",
        "features_overlay_step0000012.png"]
    assert header_of(read_picture(second / "features_overlay_step0000012.png"),
                     "epoch 1 · step 12")
    # no logger and no image_dir: the pictures still land in a folder of the run's own
    fit(tmp_path / "c", False, max_epochs=1)
    fit(tmp_path / "c", False, max_epochs=1)
    own = tmp_path / "c" / "gradcam"
    assert sorted(p.name for p in own.iterdir()) == ["version_0", "version_1"]
    assert (own / "version_1" / "features_overlay_step0000006.png").is_file()


def test_claiming_run_folders_skips_taken_numbers_and_files(tmp_path):
    (tmp_path / "version_3").mkdir()
    (tmp_path / "version_x").mkdir()
    assert claim_run_directory(tmp_path).name == "version_4"
    assert claim_run_directory(tmp_path).name == "version_5"
    assert claim_run_directory(tmp_path / "new").name == "version_0"


# --- Weights & Biases, offline --------------------------------------------------------------


def wandb_records(run_dir: Path) -> list[Any]:
    """The protobuf ``Record`` messages of an offline W&B run's ``.wandb`` file.

    The file is a LevelDB-style log (32 KiB blocks, 7-byte chunk headers) of records, after
    a 7-byte ``:W&B`` file header.
    """
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data.startswith(b":W&B")
    blobs, pending, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            blobs.append(pending)
    records = []
    for blob in blobs:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(blob)
        records.append(record)
    return records


def wandb_history(run_dir: Path, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The history rows of a finished offline W&B run.

    ``run.finish()`` can return before W&B's service has written the last records, so this
    waits for the run's ``exit`` record.
    """
    deadline = time.monotonic() + timeout_s
    records = wandb_records(run_dir)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, "the offline W&B run never wrote its exit record"
        time.sleep(0.2)
        records = wandb_records(run_dir)
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]


@pytest.mark.slow
def test_wandb_offline_run_has_the_pictures_in_its_media_at_the_global_step(tmp_path,
                                                                            monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
                        "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_SILENT": "true",
                        "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}.items():
        monkeypatch.setenv(name, value)
    logger = WandbLogger(project="gradcam", save_dir=str(tmp_path), offline=True)
    try:
        _, callback = fit(tmp_path, logger)
        run_dir = Path(logger.experiment.dir).parent
        WandbSink(logger, "jpeg").log_image("gradcam/check", callback.last_grid, 99, "jpeg")
    finally:
        logger.experiment.finish()
    rows = wandb_history(run_dir)

    grids = [r for r in rows if f"{OVERLAY}/filenames" in r]
    assert [r["trainer/global_step"] for r in grids] == STEPS
    assert [r[f"{OVERLAY}/captions"] for r in grids] == [["epoch 0 · step 6"],
                                                         ["epoch 1 · step 12"]]
    media = run_dir / "files" / grids[-1][f"{OVERLAY}/filenames"][0]
    assert media.suffix == ".png" and "media/images" in media.as_posix()
    last = read_picture(media)
    assert torch.equal(last, callback.last_grid)
    assert header_of(last, "epoch 1 · step 12")
    strips = [r for r in rows if "gradcam/features/filmstrip/filenames" in r]
    assert [r["trainer/global_step"] for r in strips] == [12]
    jpeg = next(r for r in rows if "gradcam/check/filenames" in r)  # the default image_format
    assert jpeg["trainer/global_step"] == 99 and jpeg["gradcam/check/format"] == "jpg"
    assert read_picture(run_dir / "files" / jpeg["gradcam/check/filenames"][0]).shape == \
        callback.last_grid.shape

    scalars = [r for r in rows if "gradcam/features/border_energy" in r]
    assert [(r["trainer/global_step"], r["epoch"]) for r in scalars] == [(6, 0), (12, 1)]
    assert scalars[-1]["gradcam/features/border_energy"] == pytest.approx(
        callback.last_metrics["gradcam/features/border_energy"])


# --- MLflow, local sqlite store ---------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_run_has_the_pictures_as_step_images_and_the_scalars(tmp_path):
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="gradcam", tracking_uri=uri,
                          artifact_location=str(tmp_path / "artifacts"))
    _, callback = fit(tmp_path, logger)
    client = MlflowClient(uri)
    run_id = logger.run_id
    names = [Path(a.path).name for a in client.list_artifacts(run_id, "images")]
    overlays = [n for n in names if n.startswith("gradcam~features~overlay+step+")
                and n.endswith(".png") and "compressed" not in n]
    assert sorted(int(n.split("+step+")[1].split("+")[0]) for n in overlays) == STEPS
    assert any(n.startswith("gradcam~features~filmstrip+step+12+") for n in names)
    last = next(n for n in overlays if "+step+12+" in n)
    local = client.download_artifacts(run_id, f"images/{last}", str(tmp_path / "down"))
    picture = read_picture(Path(local))
    assert torch.equal(picture, callback.last_grid)
    assert header_of(picture, "epoch 1 · step 12")
    assert not (tmp_path / "gradcam").exists()  # no stray files next to the run

    border = client.get_metric_history(run_id, "gradcam/features/border_energy")
    assert sorted(m.step for m in border) == STEPS
    # Lightning itself logs epoch 0 at step 5 (validation) and epoch 1 at step 6 (training)
    epochs = {(m.step, m.value) for m in client.get_metric_history(run_id, "epoch")}
    assert {(6, 0.0), (12, 1.0)} <= epochs


# --- any other logger -------------------------------------------------------------------------


class RecordingLogger(Logger):
    """A third-party logger with a W&B-style ``log_image(key, images, step)``."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, int, Any]] = []
        self.metrics: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_image(self, key: str, images: list[Any], step: int | None = None) -> None:
        self.images.extend((key, step, image) for image in images)


class SilentLogger(RecordingLogger):
    log_image = None  # type: ignore[assignment]


def test_any_logger_with_log_image_gets_the_pictures_and_epoch_with_the_scalars(tmp_path):
    logger = RecordingLogger()
    _, callback = fit(tmp_path, logger)
    class_maps = "gradcam/features/class_maps"  # metric_samples default
    assert [(key, step) for key, step, _ in logger.images] == [
        (class_maps, 6), (OVERLAY, 6), (class_maps, 12), (OVERLAY, 12),
        ("gradcam/features/filmstrip", 12)]
    assert torch.equal(as_tensor(logger.images[3][2]), callback.last_grid)
    ours = [(step, m) for step, m in logger.metrics if "gradcam/features/border_energy" in m]
    assert [(step, m["epoch"]) for step, m in ours] == [(6, 0), (12, 1)]
    assert not (tmp_path / "gradcam").exists()


def test_a_logger_that_takes_no_pictures_is_named_in_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="SilentLogger takes no pictures.*image_dir="):
        sinks = image_sinks([SilentLogger()], None, "png", tmp_path)
    assert sinks == []
    sinks = image_sinks([SilentLogger()], tmp_path / "pictures", "png", tmp_path)
    assert [type(s) for s in sinks] == [FileSink]
    assert sinks[0].directory == tmp_path / "pictures" / "version_0"


def test_sinks_for_tensorboard_and_csv_import_neither_wandb_nor_mlflow(tmp_path):
    script = (
        "import sys\n"
        "from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger\n"
        "from gradcam_callback.lightning.sinks import image_sinks\n"
        f"sinks = image_sinks([TensorBoardLogger({str(tmp_path)!r}), CSVLogger({str(tmp_path)!r})],"
        " None, 'png')\n"
        "print(len(sinks), 'wandb' in sys.modules, 'mlflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["2", "False", "False"]


# --- legible pictures -------------------------------------------------------------------------


def test_a_map_with_no_positive_evidence_says_so_on_its_tile():
    images = torch.full((2, 3, 128, 128), 0.5)
    maps = torch.rand(2, 8, 8) + 0.1
    maps[1] = 0.0
    grid = explanation_grid(images, [("Grad-CAM", maps)], [["a"], ["b"]])
    plain = explanation_grid(images, [("Grad-CAM", torch.rand(2, 8, 8) + 0.1)], [["a"], ["b"]])
    text = torch.tensor(TEXT, dtype=torch.uint8).view(3, 1, 1)
    is_text = (grid == text).all(dim=0)
    bottom = grid.shape[1] - 6 - 128  # the overlay row's tiles
    right = grid.shape[2] - 6 - 128
    assert is_text[bottom:, right:].sum() > 50  # the empty map's tile carries its note
    assert is_text[bottom:, right - 140 : right - 6].sum() == 0  # the other one does not
    assert grid.shape == plain.shape
    note = annotated_grid([torch.zeros(1, 3, 128, 128, dtype=torch.uint8)], [""], [[]],
                          notes={(0, 0): NO_EVIDENCE})
    assert (note == text).all(dim=0).sum() > 50
    with pytest.raises(ValueError, match=r"notes: tile \(1, 0\) is outside"):
        annotated_grid([torch.zeros(1, 3, 8, 8, dtype=torch.uint8)], [""], [[]],
                       notes={(1, 0): NO_EVIDENCE})


def test_text_grows_with_the_tiles_so_it_keeps_its_share_of_the_width():
    def header_text_height(tile: int) -> tuple[int, int]:
        grid = annotated_grid([torch.zeros(1, 3, tile, tile, dtype=torch.uint8)], ["input"],
                              [["true: left"]], header="epoch 0 · step 1")
        inked = (grid != torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1)).any(0)
        rows = inked.any(dim=1).tolist()
        top = rows.index(True)
        return rows.index(False, top) - top, grid.shape[2]

    small, small_width = header_text_height(128)
    large, large_width = header_text_height(512)
    assert large > 2.5 * small  # 13 px text for 128 px tiles, 42 px for 512 px tiles
    assert large / large_width > 0.6 * small / small_width


def test_filmstrip_rows_name_the_class_from_the_dataset(tmp_path):
    data = StripeData()
    data.val_set.classes = CLASS_NAMES  # torchvision datasets carry their names this way
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer, callback = fit(tmp_path, logger, data=data)
    samples = callback.samples
    expected_rows = [f"#{i} {CLASS_NAMES[int(label)]}" for i, label in
                     zip(samples.indices, samples.labels, strict=True)]
    images = to_display(samples.inputs, None, None, joint=True)  # no Normalize: batch min-max
    expected = filmstrip(resize_tiles(images, 256), callback.history.maps,
                         ["epoch 0", "epoch 1"], expected_rows,
                         header=f"filmstrip · epochs 0-1 · step {trainer.global_step}")
    assert torch.equal(callback.log_filmstrip(trainer), expected)
    numbered = filmstrip(resize_tiles(images, 256), callback.history.maps,
                         ["epoch 0", "epoch 1"], [f"#{i}" for i in samples.indices],
                         header=f"filmstrip · epochs 0-1 · step {trainer.global_step}")
    assert not torch.equal(numbered[:, :, :80], expected[:, :, :80])
    assert header_of(expected, "filmstrip · epochs 0-1 · step 12")
    assert run_header(1, 12) == "epoch 1 · step 12"
