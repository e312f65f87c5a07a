"""`make demo`'s script runs as a user would run it and writes a real picture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_writes_a_grid_png_and_tensorboard_logs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--epochs", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    log_dir = tmp_path / "tensorboard" / "quickstart"
    assert f"tensorboard --logdir {log_dir} --samples_per_plugin images=100" in result.stdout
    with Image.open(tmp_path / "quickstart_grid.png") as png:
        assert png.mode == "RGB" and png.width > 8 * 128 and png.height > 2 * 128
        assert np.asarray(png).std() > 10  # a picture, not a blank
    assert list(log_dir.glob("events.out.tfevents.*"))
