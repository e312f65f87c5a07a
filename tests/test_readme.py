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

    table_rows = re.findall(r"^\| (`.+?`) \|", README.read_text(), flags=re.MULTILINE)
    documented = {name for row in table_rows for name in re.findall(r"`(\w+)`", row)}
    arguments = set(inspect.signature(GradCAMCallback).parameters)
    assert documented == arguments
