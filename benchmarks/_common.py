"""Shared by the benchmark scripts: arguments, interleaved timing, machine info, tables.

Every ratio is measured in one process with the candidates interleaved round by round,
and reported as the median over rounds, so drift in machine load hits all alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections.abc import Callable

import torch


def parse_args(description: str, rounds: int = 7) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (when one exists)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    parser.add_argument("--rounds", type=int, default=rounds, help="timed rounds per candidate")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    torch.set_num_threads(args.threads)
    return args


def machine(args: argparse.Namespace) -> str:
    cpu = platform.processor() or platform.machine()
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"CPU ({cpu}, {os.cpu_count()} cores, torch threads = {torch.get_num_threads()})")
    return f"{where}; torch {torch.__version__}; Python {platform.python_version()}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, device: str,
                warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each candidate, rounds interleaved A, B, C, A, B, C..."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def verdict(value: float, goal: float, lower_is_better: bool = True) -> str:
    met = value <= goal if lower_is_better else value >= goal
    return "met" if met else "MISSED"


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1))  # type: ignore[union-attr]


def reset_peak(device: str) -> int:
    """Reset the peak counter; return the memory in use now (bytes)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    return _status_kb("VmRSS") * 1024


def peak_memory(device: str) -> int:
    """The peak memory (bytes) since :func:`reset_peak`: GPU memory allocated, or the
    process's resident set (VmHWM) on the CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    return _status_kb("VmHWM") * 1024
