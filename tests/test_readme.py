"""Every Python code block in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "readme"})


def test_the_option_table_lists_exactly_the_constructor_arguments():
    import inspect

    from gradcam_callback import GradCAMCallback

    text = README.read_text()
    table = text[text.index("| option | default | meaning |"):]
    table = table[: table.index("\n\n")]
    table_rows = re.findall(r"^\| (`.+?`) \|", table, flags=re.MULTILINE)
    documented = {name for row in table_rows for name in re.findall(r"`(\w+)`", row)}
    arguments = set(inspect.signature(GradCAMCallback).parameters)
    assert documented == arguments


@pytest.mark.slow
def test_the_lightningcli_yaml_runs_as_written(tmp_path):
    import os
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    yaml_blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    config = next(b for b in yaml_blocks if b.startswith("# python examples/cli.py fit"))
    (tmp_path / "gradcam.yaml").write_text(config)
    root = README.parent
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "cli.py"), "fit", "--config", "gradcam.yaml",
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
         "--data.train_size", "128"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "logs").glob("lightning_logs/version_*"))
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "gradcam/features/overlay" in events.Tags()["images"]
