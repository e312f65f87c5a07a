"""Rendering and TensorBoard writing against the CAM itself (issue goal 4).

8 samples at 224x224 on torchvision resnet18 layer4: the time to compute the maps, and the
time to turn them into the callback's annotated grid and write it to an event file.
Also the event file's growth per logged grid.

    python benchmarks/render_cost.py [--device cuda] [--threads 2] [--rounds 7]
"""

from __future__ import annotations

from tempfile import TemporaryDirectory

import torch
import torch.nn.functional as F
import torchvision
from _common import interleaved, machine, parse_args, table, verdict
from torch.utils.tensorboard import SummaryWriter

from gradcam_callback import explain_batch
from gradcam_callback.lightning.sinks import write_image_summary
from gradcam_callback.render import (
    encode_image,
    explanation_grid,
    prediction_captions,
    resize_tiles,
    to_display,
)


def render(images: torch.Tensor, cams: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """What the callback does after the CAM: display images, overlays, captions."""
    tiles = resize_tiles(to_display(images.cpu()), 256)
    labels = torch.arange(len(images)) % 10
    captions, wrong = prediction_captions(logits.cpu(), labels)
    return explanation_grid(tiles, [("Grad-CAM", cams)], captions, wrong)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(args.device)
    noise = torch.randn(8, 3, 224, 224, device=args.device)  # worst case for compression
    smooth = F.interpolate(torch.randn(8, 3, 28, 28, device=args.device), size=(224, 224),
                           mode="bicubic", align_corners=False)  # photo-like: compresses well
    print(f"Machine: {machine(args)}")
    print(f"8 samples, 224x224, resnet18 layer4; median of {args.rounds} interleaved rounds.")
    print("Writes are flushed: TensorBoard's writer thread computes each record's CRC32C in")
    print("pure Python (~0.2 s per MB, holding the GIL), a cost training pays either way.\n")

    rows = []
    for content, inputs in (("noise", noise), ("smooth", smooth)):
        result = explain_batch(model, inputs, "layer4")
        grid = render(inputs, result.cams, result.logits)
        with TemporaryDirectory() as tmp:
            writer = SummaryWriter(tmp)
            step = iter(range(10**6))

            def write(image_format: str, inputs=inputs, result=result, writer=writer,
                      step=step):
                picture = render(inputs, result.cams, result.logits)
                if image_format == "add_image":
                    writer.add_image("default", picture, next(step), dataformats="CHW")
                else:
                    write_image_summary(writer, "gradcam", picture, next(step), image_format)
                writer.flush()

            times = interleaved({
                "cam": lambda inputs=inputs: explain_batch(model, inputs, "layer4"),
                "jpeg": lambda write=write: write("jpeg"),
                "png": lambda write=write: write("png"),
                "add_image": lambda write=write: write("add_image"),
                "render": lambda inputs=inputs, result=result: render(inputs, result.cams,
                                                                      result.logits),
            }, args.rounds, args.device)
            writer.close()
        for image_format in ("jpeg", "png"):
            ratio = times[image_format] / times["cam"]
            goal = "<= 0.25x" if image_format == "jpeg" else ""
            rows.append((f"{content}: render + write ({image_format}) / CAM", f"{ratio:.2f}x",
                         goal, verdict(ratio, 0.25) if goal else "",
                         f"{times[image_format] * 1e3:.0f} / {times['cam'] * 1e3:.0f} ms, "
                         f"{len(encode_image(grid, image_format)) / 1024:.0f} kB per grid"))
        rows += [
            (f"{content}:   of which rendering", f"{times['render'] * 1e3:.0f} ms", "", "", ""),
            (f"{content}:   before: SummaryWriter.add_image",
             f"{times['add_image'] / times['cam']:.2f}x", "", "",
             f"{times['add_image'] * 1e3:.0f} ms"),
        ]
    print(table(rows, ("measure", "value", "goal", "", "detail")))
    print(f"\nGrid: {grid.shape[2]}x{grid.shape[1]} px")


if __name__ == "__main__":
    main()
