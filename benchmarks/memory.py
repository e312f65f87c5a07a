"""Memory over many validation runs: nothing may grow but the drift history (issue goal 5).

A small CNN (the demo's) with ``GradCAMCallback`` at its defaults and a TensorBoard logger:
after a few warm-up runs, 100 more invocations of the callback; resident memory (RSS) and
the number of live tensors before and after, against the bytes the history itself adds.

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
from lightning.pytorch import Trainer
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
    maps = callback.state_dict()["history_maps"]
    return 0 if maps is None else maps.numel() * maps.element_size()


def main() -> None:
    import argparse

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
    val = DataLoader(ShortcutShapes(64, seed=2), batch_size=64)
    with TemporaryDirectory() as tmp:
        trainer = Trainer(logger=TensorBoardLogger(tmp), callbacks=[callback],
                          accelerator="gpu" if args.device.startswith("cuda") else "cpu",
                          devices=1, enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(model, val)  # sets the callback up and logs the first run
        for _ in range(10):
            callback.log_cams(trainer, model, "validate")
        rss_before, tensors_before, history_before = rss_bytes(), live_tensors(), history_bytes(
            callback)
        for _ in range(args.runs):
            callback.log_cams(trainer, model, "validate")
        gc.collect()
        rss_after, tensors_after, history_after = rss_bytes(), live_tensors(), history_bytes(
            callback)

    history_growth = history_after - history_before
    rss_growth = rss_after - rss_before
    excess = rss_growth - history_growth
    per_run = history_growth / args.runs
    print(f"Machine: {machine(args)}")
    print(f"{args.runs} callback runs after 11 warm-up runs, 8 samples of 64x64\n")
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
