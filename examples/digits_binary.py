"""Is it a 3? A one-logit model on real digits, with a watermark as a binary shortcut.

The digits are scikit-learn's bundled ``load_digits`` (1,797 real 8x8 scans, shipped inside
the package: nothing is downloaded), upsampled to 16 px and placed at a random place in a
40 px canvas. The label is 1 for a "3" (about 10% of the digits) and 0 for any other digit;
the model has one logit and trains with ``BCEWithLogitsLoss``. A small white square (8x8 px,
4% of the image) sits in the top-left corner of some images:

- ``shortcut`` run: in training the watermark is on every "3" and on no other digit, so it
  alone tells the label; in validation it is on a random half of the images, whatever
  their label;
- ``honest`` run: on a random half in training too, so only the digit tells the label.

Training is balanced by sampling: each epoch draws as many images as the training split
holds (1,200), with replacement, the 3s and the other digits with equal total weight (a
batch is half 3s on average; each 3 is drawn about five times an epoch). Validation keeps
the natural mix (597 digits, about 10% 3s: always answering "not 3" scores 0.90).

Each item is a dict with a ``digit_mask`` and a ``watermark_mask`` (empty when the image has
no watermark: its lift is then undefined and left out of the mean; the callback's warning
about it is silenced here). ``GradCAMCallback`` reads the task as binary from the ``(N, 1)``
output, explains the predicted side (``+logit`` for a "3", ``-logit`` for "not 3") and logs,
over the first 256 validation digits at every epoch, per mask ``lift`` (energy in the mask
/ the mask's share of the image; 1.0 = no preference) with its spread. This script prints
the per-epoch numbers, the accuracy on the validation images whose watermark contradicts
the label (a "3" without it, another digit with it), a verdict per run, and writes the last
overlay grid and class maps of each run as PNGs.

    python examples/digits_binary.py --out binary_output   # 30-40 s on 2 CPU cores
    python examples/digits_binary.py --seeds 0 1 2         # a separation table, ~1 min

CPU only, nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from gradcam_callback import GradCAMCallback

LAYER = "features"
SIZE = 40
DIGIT = 16
MARK = 8
INSET = 1  # the watermark's top-left corner: (INSET, INSET)
MEAN, STD = 0.1, 0.3
POSITIVE = 3
CLASS_NAMES = ["not 3", "3"]
TRAIN = 1200  # of the 1,797 digits; the rest is validation


def split(seed: int, train_size: int = TRAIN) -> tuple[list[int], list[int]]:
    """Training and validation indices into the 1,797 digits, shuffled by ``seed``."""
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[:train_size], order[train_size:]


class BinaryWatermarkedDigits(Dataset):
    """sklearn digits as "3" (1.) or not (0.) in a 40 px canvas, some with a watermark.

    Args:
        indices: which of the 1,797 digits to use.
        shortcut: the watermark is on every "3" and on nothing else; else it is on a
            random half of the images, drawn independently of the label.
        seed: draws the digits' places and the random half.

    Items are dicts: ``image`` float ``(1, 40, 40)`` normalised with ``Normalize(0.1, 0.3)``
    (in ``transform``, so the callback finds it for display), ``label`` float ``(1,)``,
    ``digit_mask`` and ``watermark_mask`` bool ``(40, 40)``. ``labels`` and ``marked``
    (bool ``(N,)``: has the watermark) hold the rule for all items at once.
    """

    def __init__(self, indices: list[int], shortcut: bool, seed: int = 0) -> None:
        from sklearn.datasets import load_digits
        from torchvision.transforms import Normalize

        digits = load_digits()
        images = torch.tensor(digits.images[indices], dtype=torch.float32) / 16.0
        self.digits = F.interpolate(images.unsqueeze(1), size=(DIGIT, DIGIT), mode="bilinear",
                                    align_corners=False).clamp(0, 1)
        self.labels = torch.tensor(digits.target[indices] == POSITIVE, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        n = len(indices)
        if shortcut:
            self.marked = self.labels.bool()
        else:
            self.marked = torch.zeros(n, dtype=torch.bool)
            self.marked[torch.randperm(n, generator=g)[: n // 2]] = True
        low, high = INSET + MARK + 1, SIZE - 1 - DIGIT  # clear of the watermark
        self.offsets = [tuple(o) for o in
                        torch.randint(low, high + 1, (n, 2), generator=g).tolist()]
        self.transform = Normalize([MEAN], [STD])
        self.class_names = CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        canvas = torch.zeros(1, SIZE, SIZE)
        top, left = self.offsets[index]
        canvas[:, top : top + DIGIT, left : left + DIGIT] = self.digits[index]
        digit_mask = canvas[0] > 0.25
        watermark_mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        if self.marked[index]:
            canvas[:, INSET : INSET + MARK, INSET : INSET + MARK] = 1.0
            watermark_mask[INSET : INSET + MARK, INSET : INSET + MARK] = True
        return {"image": self.transform(canvas), "label": self.labels[index : index + 1],
                "digit_mask": digit_mask & ~watermark_mask, "watermark_mask": watermark_mask}


def balanced_sampler(labels: Tensor) -> WeightedRandomSampler:
    """As many draws as ``labels``, with replacement, both sides with equal total weight."""
    positives = labels.bool()
    weights = torch.where(positives, 0.5 / max(1, int(positives.sum())),
                          0.5 / max(1, int((~positives).sum())))
    return WeightedRandomSampler(weights.double(), num_samples=len(labels), replacement=True)


def shown_indices(dataset: BinaryWatermarkedDigits, per_kind: int = 2) -> list[int]:
    """Validation samples for the grid: ``per_kind`` of each of 3 / not 3 with and without
    the watermark, interleaved (3 with, 3 without, not 3 with, not 3 without, ...)."""
    kinds = [[i for i in range(len(dataset))
              if bool(dataset.labels[i]) == positive and bool(dataset.marked[i]) == marked]
             for positive, marked in ((True, True), (True, False), (False, True),
                                      (False, False))]
    return [kind[k] for k in range(per_kind) for kind in kinds if k < len(kind)]


class BinaryCNN(LightningModule):
    """Three conv blocks (32, 64, 96 channels, two 2x poolings) to a 10x10 map, global
    average pooling, one logit: the layout for which Grad-CAM is exact (it is CAM). Adam
    with a cosine decay of the learning rate to 0 over the run, so that the last epoch is a
    settled model (at a constant rate, validation accuracy moved by more than 0.5 between
    epochs).

    The receptive field (18 px) just covers a 16 px digit: enough for the honest run to
    learn it (0.96-0.98 accuracy), while the watermark stays the easier cue. With two more
    blocks at 10x10 (receptive field 34 px, 16-48 channels), the shortcut run of seed 0
    learned the digit too (0.25 accuracy where the watermark contradicts the label, 0.00
    here) and its lift on the watermark was 2.1 (6.3 here)."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(1, 32), nn.MaxPool2d(2), *block(32, 64),
                                      nn.MaxPool2d(2), *block(64, 96))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 1))
        self.loss = nn.BCEWithLogitsLoss()
        self.counts = torch.zeros(4)  # right, seen, right where contradicted, contradicted

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train_loss", loss)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.counts = torch.zeros(4)

    def validation_step(self, batch, batch_idx):
        label = batch["label"][:, 0].bool()
        right = (self(batch["image"])[:, 0] >= 0) == label
        contradicted = batch["watermark_mask"].flatten(1).any(1) != label
        self.counts += torch.tensor([right.sum(), len(right), (right & contradicted).sum(),
                                     contradicted.sum()], dtype=torch.float32).cpu()
        self.log("val_acc", right.float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Table(Callback):
    """One row per epoch: accuracies from the model, lifts from ``callback_metrics``."""

    KEYS = ("lift/watermark_mask", "lift/digit_mask")
    CAUSAL = ("faithfulness/mask_deletion/watermark_mask", "faithfulness/mask_deletion/digit_mask",
              "faithfulness/deletion_vs_random")

    def __init__(self, quiet: bool = False) -> None:
        self.rows: list[dict[str, float]] = []
        self.quiet = quiet

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        right, seen, right_contra, contra = pl_module.counts.tolist()
        row = {"epoch": trainer.current_epoch, "val_acc": right / max(1.0, seen),
               "contra_acc": right_contra / contra if contra else float("nan")}
        metrics = trainer.callback_metrics
        prefix = f"gradcam/{LAYER}/"
        for key in (*self.KEYS, *self.CAUSAL):
            for suffix in ("", "_ci95"):
                value = metrics.get(prefix + key + suffix)
                row[key + suffix] = float(value) if value is not None else float("nan")
        self.rows.append(row)
        if not self.quiet:
            print(f"  {row['epoch']:>5} {row['val_acc']:>7.2f} {row['contra_acc']:>10.2f} "
                  + " ".join(f"{row[k]:>9.2f}±{row[k + '_ci95']:<5.2f}" for k in self.KEYS),
                  flush=True)


class _TaskLine(logging.Handler):
    """Keeps the callback's info line ``GradCAMCallback: task '...' (...)``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("GradCAMCallback: task"):
            self.lines.append(message)


class Result(NamedTuple):
    """One training run: its per-epoch rows, the callback, and the task line it logged."""

    name: str
    seed: int
    rows: list[dict[str, float]]
    gradcam: GradCAMCallback
    task_line: str | None
    seconds: float
    metrics: dict[str, float]


def run(name: str, shortcut: bool, *, seed: int = 0, epochs: int = 6,
        out: Path = Path("binary_output"), train_size: int = TRAIN, val_size: int | None = None,
        metric_samples: int = 256, lr: float = 3e-3, quiet: bool = False) -> Result:
    """Train one model (watermark = the label in training if ``shortcut``); the result."""
    start = time.perf_counter()
    seed_everything(seed, verbose=False)
    train_indices, val_indices = split(seed, train_size)
    train = BinaryWatermarkedDigits(train_indices, shortcut=shortcut, seed=seed)
    val = BinaryWatermarkedDigits(val_indices[:val_size], shortcut=False, seed=seed + 1000)
    gradcam = GradCAMCallback(LAYER, task="auto", class_names=CLASS_NAMES, target="predicted",
                              sample_indices=shown_indices(val), metric_samples=metric_samples,
                              save_gif=False)
    table = Table(quiet)
    logger = TensorBoardLogger(out / "tensorboard", name=f"{name}_seed{seed}", version=0)
    trainer = Trainer(max_epochs=epochs, logger=logger, callbacks=[gradcam, table],
                      accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=10, num_sanity_val_steps=0, enable_checkpointing=False)
    if not quiet:
        rule = "on every 3 and nothing else" if shortcut else "on a random half"
        print(f"\n[{name}, seed {seed}] watermark {rule} in training, on a random half in "
              f"validation ({int(train.labels.sum())} 3s of {len(train)} training digits, "
              f"{int(val.labels.sum())} of {len(val)} validation digits)")
    catcher = _TaskLine()
    source = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    source.addHandler(catcher)
    try:
        if not quiet:
            print(f"  {'epoch':>5} {'val acc':>7} {'contra acc':>10} "
                  + " ".join(f"{k:>15}" for k in ("lift watermark", "lift digit")), flush=True)
        trainer.fit(BinaryCNN(lr),
                    DataLoader(train, batch_size=64, sampler=balanced_sampler(train.labels)),
                    DataLoader(val, batch_size=128))
    finally:
        source.removeHandler(catcher)
    task_line = catcher.lines[0] if catcher.lines else None
    if not quiet:
        read = task_line.removeprefix("GradCAMCallback: ") if task_line else "no task line"
        print(f"  the callback read: {read}")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return Result(name, seed, table.rows, gradcam, task_line, time.perf_counter() - start,
                  metrics)


def caught(row: dict[str, float]) -> bool:
    """The verdict's rule: the watermark holds over twice its share, and more than the digit."""
    return row["lift/watermark_mask"] > max(2.0, row["lift/digit_mask"])


def verdict(row: dict[str, float]) -> str:
    watermark, digit = row["lift/watermark_mask"], row["lift/digit_mask"]
    accuracies = (f"validation accuracy {row['val_acc']:.0%}, {row['contra_acc']:.0%} where the "
                  "watermark contradicts the label")
    if caught(row):
        return (f"SHORTCUT caught: the watermark holds {watermark:.1f}x its share of the "
                f"evidence, the digit {digit:.1f}x; {accuracies}.")
    return (f"OK, no shortcut: the digit holds {digit:.1f}x its share of the evidence, the "
            f"watermark {watermark:.1f}x; {accuracies}.")


def save_png(picture: Tensor | None, path: Path) -> None:
    """A uint8 ``(3, H, W)`` picture as a PNG (nothing for ``None``)."""
    if picture is None:
        return
    from PIL import Image

    Image.fromarray(picture.permute(1, 2, 0).contiguous().numpy()).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("binary_output"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
    # by design: an image without the watermark has an empty watermark_mask (no lift)
    warnings.filterwarnings("ignore", message="GradCAMCallback: mask 'watermark_mask' is empty")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = len(args.seeds) > 1

    results = []
    for seed in args.seeds:
        for name, shortcut in (("shortcut", True), ("honest", False)):
            result = run(name, shortcut, seed=seed, epochs=args.epochs, out=args.out,
                         quiet=quiet)
            results.append(result)
            if not quiet:
                print(f"  verdict: {verdict(result.rows[-1])}  ({result.seconds:.0f} s)")
            save_png(result.gradcam.last_grid, args.out / f"grid_{name}_seed{seed}.png")
            save_png(result.gradcam.last_class_maps,
                     args.out / f"class_maps_{name}_seed{seed}.png")
    if quiet:
        lines = {r.task_line for r in results}
        print("\n" + "\n".join(sorted(line or "no task line" for line in lines)))
    print(f"\nLast epoch ({args.epochs} epochs; lifts: mean ± 95% interval over the "
          "watermarked / all of 256 validation digits):")
    print(f"  {'run':<9} {'seed':>4} {'lift watermark':>15} {'lift digit':>13} {'val acc':>8} "
          f"{'contra acc':>10} {'caught':>7} {'time':>6} {'del. watermark':>14} "
          f"{'del. digit':>10} {'del/rand':>8}")
    finals = []
    for r in results:
        row = r.rows[-1]
        finals.append({"run": r.name, "seed": r.seed, "seconds": r.seconds,
                       "caught": caught(row), **row})
        print(f"  {r.name:<9} {r.seed:>4} "
              f"{row['lift/watermark_mask']:>8.2f}±{row['lift/watermark_mask_ci95']:<5.2f} "
              f"{row['lift/digit_mask']:>7.2f}±{row['lift/digit_mask_ci95']:<5.2f} "
              f"{row['val_acc']:>8.2f} {row['contra_acc']:>10.2f} "
              f"{'yes' if caught(row) else 'no':>7} {r.seconds:>5.0f}s "
              f"{row[Table.CAUSAL[0]]:>14.2f} {row[Table.CAUSAL[1]]:>10.2f} "
              f"{row[Table.CAUSAL[2]]:>8.1f}")
    (args.out / "summary.json").write_text(json.dumps(finals, indent=1))
    print(f"\nPictures in {args.out}; TensorBoard: tensorboard --logdir {args.out / 'tensorboard'}")


if __name__ == "__main__":
    main()
