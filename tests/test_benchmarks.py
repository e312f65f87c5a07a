"""The benchmarks still fit the package: the names they patch and the state they read exist.

Running them is ``make bench`` (minutes, timings); this only catches the breakage a
refactoring leaves behind in them, in a second.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NAMES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield
    for name in [*NAMES, "_common"]:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", NAMES)
def test_every_benchmark_imports_and_has_a_main(benchmarks, name):
    assert callable(importlib.import_module(name).main)


def test_the_overhead_benchmark_times_methods_and_functions_that_exist(benchmarks):
    overhead = importlib.import_module("callback_overhead")
    missing = [f"{owner.__name__}.{name}" for owner, name in overhead.TIMED.values()
               if not callable(getattr(owner, name, None))]
    assert not missing


def test_the_memory_benchmark_reads_the_history_from_the_callback_state(benchmarks):
    memory = importlib.import_module("memory")
    from gradcam_callback import GradCAMCallback

    assert memory.history_bytes(GradCAMCallback("features")) == 0  # no run yet, no maps
