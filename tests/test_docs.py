"""The documentation as a user reads it: every Python block of the README and of the site's
pages runs as written, the option table is the constructor's, the README is a front page
whose links resolve, and the LightningCLI config runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [(path, index, block) for path in [README, *PAGES]
          for index, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(),
                                                   flags=re.DOTALL))]


def test_the_docs_have_python_examples_and_the_site_has_its_pages():
    assert len(BLOCKS) >= 5
    names = {p.name for p in PAGES}
    for page in ("index.md", "getting-started.md", "pictures.md", "numbers.md", "tasks.md",
                 "layers.md", "loggers.md", "usage.md", "cli.md", "benchmarks.md",
                 "development.md", "api.md", "changelog.md"):
        assert page in names
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(page.name in nav for page in PAGES)  # every page reachable from the nav


@pytest.mark.parametrize("path, index, block", BLOCKS,
                         ids=[f"{p.name}[{i}]" for p, i, _ in BLOCKS])
def test_python_block_runs(path, index, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{path.name}[python block {index}]", "exec"), {"__name__": "docs"})


def test_the_option_table_lists_exactly_the_constructor_arguments():
    from gradcam_callback import GradCAMCallback

    text = (ROOT / "docs" / "usage.md").read_text()
    table = text[text.index("| option | default | meaning |"):]
    table = table[: table.index("\n\n")]
    rows = re.findall(r"^\| (`.+?`) \| (`.+?`) \|", table, flags=re.MULTILINE)
    documented = {}
    for names, defaults in rows:
        for name, default in zip(re.findall(r"`(\w+)`", names),
                                 re.findall(r"`([^`]+)`", defaults) * 2, strict=False):
            documented[name] = default
    parameters = inspect.signature(GradCAMCallback).parameters
    assert set(documented) == set(parameters)
    for name, default in documented.items():  # the defaults as the signature has them
        assert default == repr(parameters[name].default).replace("'", '"'), name


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = README.read_text()
    assert len(text.encode()) < 10_000
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    assert len(links) >= 15
    missing = [link for link in links if not link.startswith("http")
               and not (ROOT / link).exists()]
    assert not missing
    # the front page of the site is the README with the links relative to docs/
    index = (ROOT / "docs" / "index.md").read_text()
    assert index == text.replace("](docs/", "](").replace("](CHANGELOG.md)", "](changelog.md)")


@pytest.mark.slow
def test_the_lightningcli_yaml_runs_as_written(tmp_path):
    import os
    import subprocess
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    page = ROOT / "docs" / "usage.md"
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.DOTALL)
    config = next(b for b in yaml_blocks if b.startswith("# python examples/cli.py fit"))
    (tmp_path / "gradcam.yaml").write_text(config)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cli.py"), "fit", "--config", "gradcam.yaml",
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
