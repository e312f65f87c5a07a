"""Quick start: train a tiny CNN on generated shapes and watch where it looks.

Runs on the CPU in well under a minute, downloads nothing. Each epoch it computes
Grad-CAM on 8 fixed validation images with :func:`gradcam_callback.compute_cam`, logs the
overlay grid to TensorBoard and prints how much of the map's mass lies on the shape.
At the end it writes the last grid as a PNG.

    python examples/quickstart.py --out demo_output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from gradcam_callback import compute_cam, overlay

CLASSES = ("square", "disc")


def make_shapes(n: int, size: int = 48, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Images of a square or a disc at a random place on noise; returns images, labels, masks."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    radius = torch.randint(5, 10, (n,), generator=g).float()
    cy = torch.rand(n, generator=g) * (size - 2 * radius) + radius
    cx = torch.rand(n, generator=g) * (size - 2 * radius) + radius
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    dy = (yy - cy.view(-1, 1, 1)).abs()
    dx = (xx - cx.view(-1, 1, 1)).abs()
    r = radius.view(-1, 1, 1)
    square = (dy <= r * 0.85) & (dx <= r * 0.85)
    disc = dy.square() + dx.square() <= r.square()
    masks = torch.where(labels.view(-1, 1, 1) == 0, square, disc)
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    images = 0.35 * torch.rand(n, 3, size, size, generator=g)
    images = torch.where(masks.unsqueeze(1), colour.expand(-1, -1, size, size), images)
    return images, labels, masks


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Sequential(  # "0": the features; its output is the last spatial one
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        ),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(CLASSES)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    train_x, train_y, _ = make_shapes(1536, seed=1)
    val_x, val_y, val_masks = make_shapes(8, seed=2)
    model = tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    log_dir = args.out / "tensorboard"
    writer = SummaryWriter(str(log_dir))

    print(f"{'epoch':>5} {'val acc':>8} {'CAM mass on shape':>18} {'shape area':>11}")
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in torch.randperm(len(train_x)).split(64):
            loss = nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        cams = compute_cam(model, val_x, target_layer=None)  # None: the last spatial layer
        with torch.no_grad():
            accuracy = (model.eval()(val_x).argmax(1) == val_y).float().mean().item()
        on_shape = ((cams * val_masks).flatten(1).sum(1) / cams.flatten(1).sum(1).clamp_min(1e-12))
        area = val_masks.float().flatten(1).mean(1)
        print(f"{epoch:>5} {accuracy:>8.2f} {on_shape.mean().item():>18.2f} "
              f"{area.mean().item():>11.2f}")
        grid = torchvision.utils.make_grid(
            torch.cat([(val_x * 255).to(torch.uint8), overlay(val_x, cams)]),
            nrow=len(val_x), padding=2,
        )
        writer.add_image("gradcam/overlay", grid, global_step=epoch)
    writer.close()

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "quickstart_overlay.png"
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    picture.resize((picture.width * 3, picture.height * 3), Image.NEAREST).save(png)
    print("\nTop row: inputs; bottom row: Grad-CAM overlays (red = where the model looks).")
    print(f"Wrote {png}")
    print(f"See every epoch in TensorBoard:  tensorboard --logdir {log_dir}")


if __name__ == "__main__":
    main()
