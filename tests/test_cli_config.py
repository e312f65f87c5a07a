"""The callback configured from YAML through LightningCLI, as users of the CLI do it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = Path(__file__).resolve().parent

CONFIG = """\
trainer:
  max_epochs: 1
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args:
      save_dir: {root}
      name: tb
      version: 0
  callbacks:
    - class_path: gradcam_callback.GradCAMCallback
      init_args:
        target_layer: features
        num_samples: {num_samples}
        method: gradcam++
        target: both
        class_names: [left, middle, right]
        mean: [0.5, 0.5, 0.5]
        std: [0.25, 0.25, 0.25]
        colormap: viridis
"""


def run_cli(tmp_path: Path, num_samples: int) -> subprocess.CompletedProcess:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path, num_samples=num_samples))
    return subprocess.run(
        [sys.executable, str(HERE / "cli_script.py"), "fit", "--config", str(config)],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_configured_from_yaml(tmp_path):
    result = run_cli(tmp_path, num_samples=3)
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["gradcam/features/class_maps",  # metric_samples
                                               "gradcam/features/filmstrip",
                                               "gradcam/features/overlay"]


def test_a_bad_value_in_yaml_fails_naming_the_argument(tmp_path):
    result = run_cli(tmp_path, num_samples=0)
    assert result.returncode != 0
    assert "num_samples=0" in result.stderr and "must be an int >= 1" in result.stderr
