"""The many-sample statistics against the floor, and their memory from 64 to 1024 samples.

The statistics (``metric_samples``) explain every sample in chunks and fold the maps into
running sums: lift, energy, area, pointing game and border lift per sample, two masks,
class maps, the consistency scalar, the mean image. The floor is the least any Grad-CAM
must do for the same samples in the same chunks: one forward pass and one
``torch.autograd.grad`` back to the layer. Goals (issue 12): per-sample cost of the
statistics / the floor <= 1.2; peak memory flat from 64 to 1024 samples.

torchvision resnet18 (random weights), 64x64 inputs, chunks of 64, ``layer3`` (4x4).

    python benchmarks/statistics_cost.py [--device cuda] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import os
import resource
import sys

import torch
import torchvision
from _common import interleaved, machine, parse_args, table, verdict
from cam_speed import floor

from gradcam_callback.lightning.statistics import collect_statistics

SIZE = 64
CHUNK = 64


def make_reader(device: str):
    """Samples made on the fly from their index (no dataset held in memory)."""

    def read(indices):
        g = torch.Generator().manual_seed(int(indices[0]))
        inputs = torch.randn(len(indices), 3, SIZE, SIZE, generator=g)
        labels = torch.tensor([i % 10 for i in indices])
        box = torch.zeros(len(indices), SIZE, SIZE, dtype=torch.bool)
        box[:, 10:40, 20:50] = True
        corner = torch.zeros_like(box)
        corner[:, :12, :12] = True
        return inputs.to(device), labels, {"box_mask": box, "corner_mask": corner}

    return read


def floor_pass(model, read, count: int, layer) -> None:
    for start in range(0, count, CHUNK):
        inputs, _, _ = read(list(range(start, min(count, start + CHUNK))))
        floor(model, inputs, layer)


def statistics_pass(model, read, count: int) -> None:
    collect_statistics(model, read, range(count), "layer3", chunk_size=CHUNK)


def peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=3)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(args.device)
    read = make_reader(args.device)
    layer = model.get_submodule("layer3")
    print(f"Machine: {machine(args)}")
    print(f"resnet18, {SIZE}x{SIZE}, chunks of {CHUNK}, layer3, median of {args.rounds} "
          "interleaved rounds\n")

    count = 128
    times = interleaved({
        "floor": lambda: floor_pass(model, read, count, layer),
        "statistics": lambda: statistics_pass(model, read, count),
    }, args.rounds, args.device, warmup=1)
    ratio = times["statistics"] / times["floor"]
    rows = [(f"statistics / floor, {count} samples", f"{ratio:.2f}x", "<= 1.20x",
             verdict(ratio, 1.20), f"{times['statistics'] / count * 1e3:.2f} / "
             f"{times['floor'] / count * 1e3:.2f} ms per sample")]

    # Peak memory: on CPU the process's peak RSS (it only grows), so the small run goes
    # first; after it, a run 16 times longer may add nothing if memory is set by the chunk.
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(args.device)
    statistics_pass(model, read, 64)
    small = peak_memory(args.device)
    statistics_pass(model, read, 1024)
    large = peak_memory(args.device)
    growth = (large - small) / small
    rows.append(("peak memory 64 -> 1024 samples", f"{growth:+.1%}", "<= +10%",
                 verdict(growth, 0.10), f"{small / 2**20:.0f} -> {large / 2**20:.0f} MiB"
                 + (" (GPU)" if args.device.startswith("cuda") else " (RSS)")))
    print(table(rows, ("measure", "value", "goal", "", "detail")))
    if os.environ.get("BENCH_VERBOSE"):
        print(times)


if __name__ == "__main__":
    main()
