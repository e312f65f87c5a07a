"""The many-sample statistics against the floor, and their memory from 64 to 1024 samples.

The statistics (``metric_samples``) explain every sample in chunks and fold the maps into
running sums: lift, energy, area, pointing game and border lift per sample, two masks,
class maps, the consistency scalar, the mean image. The floor is the least any Grad-CAM
must do for the same samples in the same chunks: one forward pass and one
``torch.autograd.grad`` back to the layer. Goals (issue 12): per-sample cost of the
statistics / the floor <= 1.2; peak memory flat from 64 to 1024 samples.

Memory is measured in a fresh process per size, after one warm-up chunk (one-time
caches), as the peak above the memory in use before the run. What grows with the samples
is the store of top cells for ``location_consistency``: 1 KB per sample.

torchvision resnet18 (random weights), 64x64 inputs, chunks of 64, ``layer3`` (4x4).

    python benchmarks/statistics_cost.py [--device cuda] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from _common import interleaved, machine, parse_args, peak_memory, reset_peak, table, verdict
from cam_speed import floor

from gradcam_callback.explainer import Explainer
from gradcam_callback.options import ExplainOptions
from gradcam_callback.samples import FixedSamples
from gradcam_callback.statistics import collect_statistics

SIZE = 64
CHUNK = 64
CHILD = "STATISTICS_COST_MEMORY_CHILD"


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
    """The callback's statistics pass: the explainer on each chunk, folded into the sums."""
    explainer = Explainer(ExplainOptions(target_layer="layer3", batch_size=CHUNK))

    def explain_chunk(indices):
        inputs, labels, masks = read(indices)
        explained = explainer.explain(model, inputs, labels, primary_only=True)
        return FixedSamples(indices, inputs.cpu(), labels, masks), explained

    collect_statistics(explain_chunk, range(count), chunk_size=CHUNK)


def memory_in_child(samples: int, args) -> int:
    """Peak memory (bytes) of one statistics pass over ``samples``, in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--device", args.device,
               "--threads", str(args.threads)]
    # A fixed mmap threshold: glibc's moving one lets freed chunk buffers linger in the heap
    # and puts several MiB of noise into the resident set.
    env = {**os.environ, CHILD: str(samples), "MALLOC_MMAP_THRESHOLD_": "65536"}
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return int(output.stdout.strip().splitlines()[-1])


def child(samples: int, device: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(device)
    statistics_pass(model, make_reader(device), CHUNK)  # warm: one-time caches and buffers
    before = reset_peak(device)
    statistics_pass(model, make_reader(device), samples)
    print(peak_memory(device) - before)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=3)
    if os.environ.get(CHILD):
        child(int(os.environ[CHILD]), args.device)
        return
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

    # Peak memory, each size in a fresh process (nothing allocated by earlier runs), after
    # one warm-up chunk: the peak above what was in use before the run (GPU memory
    # allocated, or the resident set's high-water mark on the CPU).
    peaks = {samples: memory_in_child(samples, args) for samples in (64, 1024)}
    small, large = peaks[64], peaks[1024]
    growth = (large - small) / small
    rows.append(("peak memory 64 -> 1024 samples", f"{growth:+.1%}", "<= +10%",
                 verdict(growth, 0.10), f"{small / 2**20:.0f} -> {large / 2**20:.0f} MiB "
                 + ("GPU" if args.device.startswith("cuda") else "RSS") + " above the start"))
    print(table(rows, ("measure", "value", "goal", "", "detail")))
    if os.environ.get("BENCH_VERBOSE"):
        print(times)


if __name__ == "__main__":
    main()
