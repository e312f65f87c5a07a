"""Any size: the callback's time per sample and its peak memory, from 8 to 512 samples.

A torchvision ResNet-18 (random weights, 64x64 ShortcutShapes images with two masks, a
TensorBoard logger). For each number of samples a fresh process sets the callback up with
``trainer.validate`` (which also runs the check before validation and one run), then times
``log_cams`` (the callback's whole run: CAMs, captions, pages, metrics, JPEG encoding and
the event-file write) and measures the peak resident memory of those runs above the
memory before them (Linux: ``VmHWM`` reset through ``/proc/self/clear_refs``; on CUDA the
peak allocated GPU memory). Two ways to explain: in chunks of 32 samples (the default
``batch_size``) and in one forward of all samples (``batch_size=N``, what the callback did
before chunking).

    python benchmarks/scaling.py [--device cuda] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from _common import machine, peak_memory, reset_peak, sync, table
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

SIZES = (8, 32, 128, 512)
CHUNK = 32


class ResNet(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.net = torchvision.models.resnet18(num_classes=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = nn.functional.cross_entropy(self(batch["image"]), batch["label"])
        self.log("val_loss", loss)


def child(samples: int, batch_size: int, args: argparse.Namespace) -> dict:
    from gradcam_callback import GradCAMCallback
    from gradcam_callback.synthetic import ShortcutShapes

    torch.manual_seed(0)
    model = ResNet().to(args.device)
    callback = GradCAMCallback("net.layer4", num_samples=samples, batch_size=batch_size)
    loader = DataLoader(ShortcutShapes(samples, image_size=64, seed=2), batch_size=64)
    with TemporaryDirectory() as tmp:
        trainer = Trainer(logger=TensorBoardLogger(tmp), callbacks=[callback],
                          accelerator="gpu" if args.device.startswith("cuda") else "cpu",
                          devices=1, enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(model, loader)  # set up, check, one run: warm
        times = []
        before = reset_peak(args.device)
        for _ in range(args.rounds):
            sync(args.device)
            start = time.perf_counter()
            callback.log_cams(trainer, model, "validate")
            sync(args.device)
            times.append(time.perf_counter() - start)
        peak = peak_memory(args.device) - before
        trainer.logger.finalize("success")  # close the event writer before its folder goes
    return {"seconds": statistics.median(times), "peak": peak,
            "pages": len(callback.last_pages), "width": int(callback.last_grid.shape[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return

    print(f"Machine: {machine(args)}")
    print(f"ResNet-18 at 64x64, layer4, Grad-CAM, JPEG pages of 16 samples; median of "
          f"{args.rounds} runs; peak = {'GPU memory allocated' if args.device != 'cpu' else 'RSS'}"
          " above the memory before the runs\n")
    rows, results = [], {}
    for samples in SIZES:
        modes = [(f"chunks of {CHUNK}", CHUNK)]
        if samples > CHUNK:  # else one chunk is all of them
            modes.append(("all at once", samples))
        for label, batch_size in modes:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", str(samples),
                       str(batch_size), "--device", args.device, "--threads",
                       str(args.threads), "--rounds", str(args.rounds)]
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(output.stdout.strip().splitlines()[-1])
            results[samples, label] = result
            rows.append((str(samples), label, f"{result['seconds']:.2f}",
                         f"{1000 * result['seconds'] / samples:.1f}",
                         f"{result['peak'] / 2**20:.0f}", str(result["pages"]),
                         str(result["width"])))
    print(table(rows, ("samples", "explained", "s / run", "ms / sample", "peak MB",
                       "pages", "page width px")))
    small, large = results[8, f"chunks of {CHUNK}"], results[512, f"chunks of {CHUNK}"]
    print(f"\nTime per sample, 512 vs 8 samples (chunks): "
          f"{(large['seconds'] / 512) / (small['seconds'] / 8):.2f}x")
    at_once = results[512, "all at once"]
    print(f"Peak memory at 512 samples, chunks of {CHUNK} vs all at once: "
          f"{large['peak'] / 2**20:.0f} MB vs {at_once['peak'] / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
