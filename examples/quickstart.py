"""Quick start: train a tiny CNN with Lightning and watch where it looks in TensorBoard.

Generated data (a square or a disc at a random place on noise), CPU only, well under a
minute, nothing downloaded. ``GradCAMCallback`` logs an annotated Grad-CAM grid of 8 fixed
validation images after every epoch; the last grid is also saved as a PNG.

    python examples/quickstart.py --out demo_output
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from gradcam_callback import GradCAMCallback, compute_cam

CLASSES = ["square", "disc"]


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


class ShapeClassifier(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")

    seed_everything(0, verbose=False)
    train_x, train_y, _ = make_shapes(1536, seed=1)
    val_x, val_y, val_masks = make_shapes(64, seed=2)
    train = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=64)

    gradcam = GradCAMCallback("features", num_samples=8, class_names=CLASSES)
    logger = TensorBoardLogger(args.out, name="tensorboard", version="quickstart")
    trainer = Trainer(max_epochs=args.epochs, logger=logger, callbacks=[gradcam],
                      accelerator="cpu", enable_model_summary=False, log_every_n_steps=5)
    model = ShapeClassifier()
    trainer.fit(model, train, val)

    cams = compute_cam(model, val_x, "features")
    on_shape = (cams * val_masks).flatten(1).sum(1) / cams.flatten(1).sum(1).clamp_min(1e-12)
    area = val_masks.float().flatten(1).mean(1)
    print(f"\nValidation accuracy: {trainer.callback_metrics['val_acc']:.2f}. The shapes cover "
          f"{area.mean():.0%} of the image and hold {on_shape.mean():.0%} of the Grad-CAM mass.")

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "quickstart_grid.png"
    Image.fromarray(gradcam.last_grid.permute(1, 2, 0).numpy()).save(png)
    print(f"Wrote {png} (the last grid; every epoch's grid is in TensorBoard)")
    print(f"Open TensorBoard:  tensorboard --logdir {logger.log_dir} "
          "--samples_per_plugin images=100")


if __name__ == "__main__":
    main()
