"""Real handwritten digits with a planted watermark: read the shortcut off lift and class maps.

The digits are scikit-learn's bundled ``load_digits`` (1,797 real 8x8 scans, shipped inside
the package: nothing is downloaded), upsampled to 28 px and placed in a 56 px canvas. A
small white square (5x5 px, 0.8% of the image) sits on the border ring:

- ``shortcut`` run: in training its position tells the label (class k at the k-th of ten
  places around the border); in validation it is at a random one of the ten places;
- ``honest`` run: random in training too, so only the digit tells the class.

Each item carries a ``digit_mask`` and a ``watermark_mask``. ``GradCAMCallback`` explains
the first 256 validation digits at every epoch and logs, per mask, ``lift`` (energy in the
mask / the mask's share of the image; 1.0 = no preference), with its spread, plus the
mask-free ``location_consistency`` and the ``class_maps`` picture. This script prints the
per-epoch numbers, a verdict per run, and writes the lift chart and the class maps as PNGs.

    python examples/digits_watermark.py --out digits_output            # ~1 min on a CPU
    python examples/digits_watermark.py --seeds 0 1 2 --placement center  # a separation table

CPU only, nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from gradcam_callback import GradCAMCallback

LAYER = "features"
SIZE = 56
DIGIT = 28
MARK = 5
INSET = 1
MEAN, STD = 0.1, 0.3


def watermark_places(size: int = SIZE, mark: int = MARK,
                     inset: int = INSET) -> list[tuple[int, int]]:
    """Ten (top, left) corners spread around the border ring, clockwise from the top left."""
    far = size - inset - mark
    steps = [inset + round(i * (far - inset) / 3) for i in range(4)]
    ring = [(inset, x) for x in steps[:-1]] + [(y, far) for y in steps[:-1]] \
        + [(far, x) for x in reversed(steps[1:])] + [(y, inset) for y in reversed(steps[1:])]
    return [ring[round(i * len(ring) / 10)] for i in range(10)]


class WatermarkedDigits(Dataset):
    """sklearn digits in a 56 px canvas with a white watermark on the border ring.

    Args:
        indices: which of the 1,797 digits to use.
        shortcut: whether the watermark's place is the label's (else random).
        placement: ``"random"`` (the digit anywhere inside the ring) or ``"center"``.
        seed: draws the random places.

    Items are dicts: ``image`` float ``(1, 56, 56)`` normalised with ``Normalize(0.1, 0.3)``
    (in ``transform``, so the callback finds it for display), ``label``, ``digit_mask`` and
    ``watermark_mask`` bool ``(56, 56)``.
    """

    def __init__(self, indices: list[int], shortcut: bool, placement: str = "random",
                 seed: int = 0) -> None:
        from sklearn.datasets import load_digits
        from torchvision.transforms import Normalize

        digits = load_digits()
        images = torch.tensor(digits.images[indices], dtype=torch.float32) / 16.0
        self.digits = F.interpolate(images.unsqueeze(1), size=(DIGIT, DIGIT), mode="bilinear",
                                    align_corners=False).clamp(0, 1)
        self.labels = torch.tensor(digits.target[indices], dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        places = watermark_places()
        random_place = torch.randint(len(places), (len(indices),), generator=g)
        self.places = [places[int(label if shortcut else r)]
                       for label, r in zip(self.labels, random_place, strict=True)]
        low, high = INSET + MARK + 1, SIZE - INSET - MARK - 1 - DIGIT
        if placement == "center":
            self.offsets = [((SIZE - DIGIT) // 2,) * 2] * len(indices)
        else:
            offsets = torch.randint(low, high + 1, (len(indices), 2), generator=g)
            self.offsets = [tuple(o) for o in offsets.tolist()]
        self.transform = Normalize([MEAN], [STD])
        self.class_names = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        canvas = torch.zeros(1, SIZE, SIZE)
        top, left = self.offsets[index]
        canvas[:, top : top + DIGIT, left : left + DIGIT] = self.digits[index]
        digit_mask = canvas[0] > 0.25
        y, x = self.places[index]
        canvas[:, y : y + MARK, x : x + MARK] = 1.0
        watermark_mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        watermark_mask[y : y + MARK, x : x + MARK] = True
        return {"image": self.transform(canvas), "label": self.labels[index],
                "digit_mask": digit_mask & ~watermark_mask, "watermark_mask": watermark_mask}


class DigitsCNN(LightningModule):
    """Three conv blocks to a 14x14 map, global average pooling, a linear head: the layout
    for which Grad-CAM is exact (it is CAM). Two coordinate channels (CoordConv) are added
    to the input inside ``forward``, so that the network *can* tell the watermark's ten
    places apart, as a real network does with enough depth and padding."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32),
                                      nn.MaxPool2d(2), *block(32, 48))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10))
        ramp = torch.linspace(-1, 1, SIZE)
        grid = torch.stack(torch.meshgrid(ramp, ramp, indexing="ij"))
        self.register_buffer("coords", grid.unsqueeze(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        coords = self.coords.expand(len(x), -1, -1, -1).to(x.dtype)
        return self.head(self.features(torch.cat([x, coords], dim=1)))

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch["image"]), batch["label"])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", (self(batch["image"]).argmax(1) == batch["label"]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class Table(Callback):
    """Prints one line per epoch from the scalars GradCAMCallback just published."""

    KEYS = ("lift/watermark_mask", "lift/digit_mask", "location_consistency", "border_lift")

    def __init__(self, quiet: bool = False) -> None:
        self.rows: list[dict[str, float]] = []
        self.quiet = quiet

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        prefix = f"gradcam/{LAYER}/"
        row = {"epoch": trainer.current_epoch, "val_acc": float(metrics["val_acc"])}
        for key in self.KEYS:
            row[key] = float(metrics[prefix + key])
            row[key + "_ci95"] = float(metrics[prefix + key + "_ci95"])
        self.rows.append(row)
        if not self.quiet:
            print(f"  {row['epoch']:>5} {row['val_acc']:>7.2f} "
                  + " ".join(f"{row[k]:>9.2f}±{row[k + '_ci95']:<5.2f}" for k in self.KEYS),
                  flush=True)


def run(name: str, shortcut: bool, args: argparse.Namespace, seed: int, quiet: bool = False
        ) -> tuple[list[dict[str, float]], GradCAMCallback]:
    """Train one model; return its per-epoch rows and the callback."""
    seed_everything(seed, verbose=False)
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(seed)).tolist()
    train = WatermarkedDigits(order[:1200], shortcut=shortcut, placement=args.placement,
                              seed=seed)
    val = WatermarkedDigits(order[1200:], shortcut=False, placement=args.placement,
                            seed=seed + 1000)
    gradcam = GradCAMCallback(LAYER, num_samples=10, class_names=val.class_names,
                              metric_samples=256, save_gif=False)
    table = Table(quiet)
    logger = TensorBoardLogger(args.out / "tensorboard", name=f"{name}_seed{seed}", version=0)
    trainer = Trainer(max_epochs=args.epochs, logger=logger, callbacks=[gradcam, table],
                      accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=10, num_sanity_val_steps=0, enable_checkpointing=False)
    if not quiet:
        print(f"\n[{name}, seed {seed}] watermark place "
              f"{'= the label' if shortcut else 'random'} in training, random in validation")
        print(f"  {'epoch':>5} {'val acc':>7} " + " ".join(f"{k:>15}" for k in (
            "lift watermark", "lift digit", "consistency", "border lift")))
    trainer.fit(DigitsCNN(), DataLoader(train, batch_size=64, shuffle=True),
                DataLoader(val, batch_size=128))
    return table.rows, gradcam


def verdict(row: dict[str, float]) -> str:
    watermark, digit = row["lift/watermark_mask"], row["lift/digit_mask"]
    if watermark > max(2.0, digit):
        return (f"SHORTCUT: the watermark holds {watermark:.1f}x its share of the evidence, "
                f"the digit {digit:.1f}x; validation accuracy {row['val_acc']:.0%}.")
    return (f"OK: the digit holds {digit:.1f}x its share of the evidence, the watermark "
            f"{watermark:.1f}x; validation accuracy {row['val_acc']:.0%}.")


def lift_chart(histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for axis, mask in zip(axes, ("watermark_mask", "digit_mask"), strict=True):
        for name, rows in histories.items():
            epochs = [r["epoch"] for r in rows]
            mean = [r[f"lift/{mask}"] for r in rows]
            half = [r[f"lift/{mask}_ci95"] for r in rows]
            line = axis.plot(epochs, mean, marker="o", label=name)[0]
            axis.fill_between(epochs, [m - h for m, h in zip(mean, half, strict=True)],
                              [m + h for m, h in zip(mean, half, strict=True)],
                              color=line.get_color(), alpha=0.2)
        axis.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        axis.set_title(f"lift/{mask}")
        axis.set_xlabel("epoch")
    axes[0].set_ylabel("lift (1 = no preference)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("digits_output"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--placement", choices=("random", "center"), default="random")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = len(args.seeds) > 1

    from gradcam_callback.render import encode_image

    finals = []
    for seed in args.seeds:
        histories = {}
        for name, shortcut in (("shortcut", True), ("honest", False)):
            rows, gradcam = run(name, shortcut, args, seed, quiet)
            histories[name] = rows
            finals.append({"run": name, "seed": seed, **rows[-1]})
            if not quiet:
                print(f"  verdict: {verdict(rows[-1])}")
            if gradcam.last_class_maps is not None:
                (args.out / f"class_maps_{name}_seed{seed}.png").write_bytes(
                    encode_image(gradcam.last_class_maps, "png"))
        lift_chart(histories, args.out / f"lift_seed{seed}.png")
    print(f"\nLast epoch, placement={args.placement} "
          "(mean ± 95% interval over 256 validation digits):")
    print(f"  {'run':<9} {'seed':>4} {'val acc':>7} {'lift watermark':>16} {'lift digit':>14} "
          f"{'consistency':>13}")
    for row in finals:
        print(f"  {row['run']:<9} {row['seed']:>4} {row['val_acc']:>7.2f} "
              f"{row['lift/watermark_mask']:>9.2f}±{row['lift/watermark_mask_ci95']:<5.2f} "
              f"{row['lift/digit_mask']:>7.2f}±{row['lift/digit_mask_ci95']:<5.2f} "
              f"{row['location_consistency']:>7.2f}±{row['location_consistency_ci95']:<5.2f}")
    (args.out / f"summary_{args.placement}.json").write_text(json.dumps(finals, indent=1))
    print(f"\nPictures in {args.out}; TensorBoard: tensorboard --logdir {args.out / 'tensorboard'}")


if __name__ == "__main__":
    main()
