"""Under DDP rank zero logs exactly once per validation run, and no rank hangs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = Path(__file__).resolve().parent


def run_ddp(tmp_path: Path, logger: str) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), str(tmp_path), logger],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "done_rank0").exists() and (tmp_path / "done_rank1").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_log_once_per_validation_run(tmp_path):
    run_ddp(tmp_path, "tensorboard")
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["gradcam/features/class_maps",  # metric_samples
                                               "gradcam/features/filmstrip",
                                               "gradcam/features/overlay"]
    steps = [e.step for e in events.Images("gradcam/features/overlay")]
    assert steps == [3, 6]  # 96 samples / 2 ranks / 16 per batch: one image per run, no repeats
    assert [e.step for e in events.Images("gradcam/features/class_maps")] == [3, 6]


@pytest.mark.slow
def test_ddp_with_image_dir_and_no_logger_writes_each_file_once_and_does_not_hang(tmp_path):
    run_ddp(tmp_path, "none")  # trainer.log_dir is a collective: a rank-zero-only call would hang
    assert [p.name for p in (tmp_path / "gradcam").iterdir()] == ["version_0"]  # one run folder
    files = sorted(p.name for p in (tmp_path / "gradcam" / "version_0").glob("*.*"))
    assert files == ["features_class_maps_step0000003.jpg", "features_class_maps_step0000006.jpg",
                     "features_filmstrip_step0000006.jpg", "features_overlay_step0000003.jpg",
                     "features_overlay_step0000006.jpg"]
