"""Memory over many validation runs: nothing may grow but the drift history (issue goal 5).

A small CNN (the demo's) with ``GradCAMCallback`` at its defaults (statistics over the 64
validation images included) and a TensorBoard logger, fit for 111 epochs of one training
batch each: after 11 warm-up epochs, 100 more validation runs; resident memory (RSS) and
the number of live tensors before and after, against the bytes the history itself adds.

The script runs itself with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``).
With glibc's moving threshold, freed chunk buffers of the statistics stay in a fragmented
heap: RSS then grows by a further 5 to 25 MB over 100 runs while the live tensors stay
flat, which is the allocator, not a leak.

    python benchmarks/memory.py [--device cuda] [--threads 2] [--runs 100]
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import resource
import sys
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from _common import machine, table, verdict
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from gradcam_callback import GradCAMCallback
from gradcam_callback.synthetic import ShortcutShapes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shortcut_learning.py"


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is the best we have
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def history_bytes(callback: GradCAMCallback) -> int:
    maps = callback.state_dict()["maps"]  # the drift history (lightning/history.py)
    return 0 if maps is None else maps.numel() * maps.element_size()


class Probe(Callback):
    """Reads RSS, live tensors and history bytes after the callback's run of an epoch:
    once after ``warmup`` epochs, and after the last one."""

    def __init__(self, callback: GradCAMCallback, warmup: int) -> None:
        self.callback, self.warmup = callback, warmup
        self.readings: list[tuple[int, int, int]] = []

    def on_validation_epoch_end(self, trainer: Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch == self.warmup or epoch == trainer.max_epochs:
            gc.collect()
            self.readings.append((rss_bytes(), live_tensors(), history_bytes(self.callback)))


def main() -> None:
    import argparse

    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    spec = importlib.util.spec_from_file_location("shortcut_learning", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    model = example.SmallCNN().to(args.device)
    callback = GradCAMCallback("features")
    probe = Probe(callback, warmup=11)
    train = DataLoader(ShortcutShapes(64, seed=1), batch_size=64)
    val = DataLoader(ShortcutShapes(64, seed=2), batch_size=64)
    with TemporaryDirectory() as tmp:
        trainer = Trainer(logger=TensorBoardLogger(tmp), callbacks=[callback, probe],
                          accelerator="gpu" if args.device.startswith("cuda") else "cpu",
                          devices=1, enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False, max_epochs=11 + args.runs,
                          num_sanity_val_steps=0, log_every_n_steps=1)
        trainer.fit(model, train, val)
    (rss_before, tensors_before, history_before), (rss_after, tensors_after, history_after) = (
        probe.readings[0], probe.readings[-1])

    history_growth = history_after - history_before
    rss_growth = rss_after - rss_before
    excess = rss_growth - history_growth
    per_run = history_growth / args.runs
    print(f"Machine: {machine(args)}")
    print(f"{args.runs} validation runs of a fit after 11 warm-up epochs, 8 samples of "
          "64x64 shown, statistics over 64\n")
    rows = [
        ("RSS growth", f"{rss_growth / 1024:.0f} kB", "", "",
         f"{rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB"),
        ("drift history growth", f"{history_growth / 1024:.0f} kB", "", "",
         f"{per_run / 1024:.1f} kB per run (8 maps, float16)"),
        ("RSS growth beyond the history", f"{excess / 1024:.0f} kB", "<= 1024 kB (noise)",
         verdict(excess, 1024 * 1024), ""),
        ("live tensors", f"+{tensors_after - tensors_before}", f"+{args.runs} (one per run)",
         verdict(tensors_after - tensors_before, args.runs),
         f"{tensors_before} -> {tensors_after}"),
    ]
    print(table(rows, ("measure", "value", "goal", "", "detail")))


if __name__ == "__main__":
    main()
