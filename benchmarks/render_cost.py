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

from gradcam_callback import annotated_grid, explain_batch, overlay, to_display
from gradcam_callback.callback import write_image_summary
from gradcam_callback.render import encode_image, resize_tiles, to_uint8


def render(images: torch.Tensor, cams: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """What the callback does after the CAM: display images, overlays, captions."""
    tiles = resize_tiles(to_display(images.cpu()), 256)
    maps = F.interpolate(cams.cpu().unsqueeze(1), size=tiles.shape[-2:], mode="bilinear",
                         align_corners=False).squeeze(1)
    probs, predicted = logits.float().cpu().softmax(1).max(1)
    captions = [[f"true: {i % 10}", f"pred: {int(c)} {p:.2f}"]
                for i, (c, p) in enumerate(zip(predicted, probs, strict=True))]
    return annotated_grid([to_uint8(tiles), overlay(tiles, maps)], ["input", "Grad-CAM"],
                          captions, [bool(int(c) != i % 10) for i, c in enumerate(predicted)])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(args.device)
    inputs = torch.randn(8, 3, 224, 224, device=args.device)
    result = explain_batch(model, inputs, "layer4")
    print(f"Machine: {machine(args)}")
    print(f"8 samples, 224x224, resnet18 layer4; median of {args.rounds} interleaved rounds\n")

    with TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp)
        step = iter(range(10**6))

        def render_and_write(image_format: str):
            write_image_summary(writer, "gradcam/layer4/overlay",
                                render(inputs, result.cams, result.logits), next(step),
                                image_format)
            writer.flush()

        times = interleaved({
            "cam": lambda: explain_batch(model, inputs, "layer4"),
            "png": lambda: render_and_write("png"),
            "jpeg": lambda: render_and_write("jpeg"),
            "render": lambda: render(inputs, result.cams, result.logits),
            "add_image": lambda: writer.add_image(
                "default_png", render(inputs, result.cams, result.logits), 0, dataformats="CHW"),
        }, args.rounds, args.device)
        writer.close()

    grid = render(inputs, result.cams, result.logits)
    rows = []
    for image_format in ("png", "jpeg"):
        ratio = times[image_format] / times["cam"]
        rows.append((f"render + write ({image_format}) / CAM", f"{ratio:.2f}x", "<= 0.25x",
                     verdict(ratio, 0.25),
                     f"{times[image_format] * 1e3:.0f} / {times['cam'] * 1e3:.0f} ms"))
    rows += [
        ("  of which rendering", f"{times['render'] * 1e3:.0f} ms", "", "", ""),
        ("  before: render + SummaryWriter.add_image", f"{times['add_image'] / times['cam']:.2f}x",
         "", "", f"{times['add_image'] * 1e3:.0f} ms"),
    ]
    for image_format in ("png", "jpeg"):
        size = len(encode_image(grid, image_format))
        rows.append((f"event file growth per grid ({image_format})", f"{size / 1024:.0f} kB",
                     "", "", f"grid {grid.shape[2]}x{grid.shape[1]} px"))
    print(table(rows, ("measure", "value", "goal", "", "times")))


if __name__ == "__main__":
    main()
