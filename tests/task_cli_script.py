"""A LightningCLI entry point for the tasks' YAML test (tests/test_tasks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch.cli import LightningCLI

from tests.task_helpers import LitTask, TaskData

if __name__ == "__main__":
    LightningCLI(LitTask, TaskData, save_config_kwargs={"overwrite": True})
