"""Catch shortcut learning while it happens: two short runs, one with a planted shortcut.

The data (``gradcam_callback.synthetic.ShortcutShapes``): the class is a shape's kind;
a small patch in the top-left corner has the class's colour. Validation images get a
*random* patch colour, so a model that reads the patch instead of the shape fails there.

1. ``shortcut``: trained with the patch always telling the class. Training accuracy is
   perfect, validation accuracy collapses, and Grad-CAM's energy sits on the patch.
2. ``honest``: trained with random patches. It has to learn the shapes; its attention stays
   on them.

``GradCAMCallback`` logs grids, scalars and a filmstrip per run to TensorBoard; this
script prints a per-epoch table and a verdict, and writes the filmstrips as PNGs.
CPU only, about two minutes on two cores, nothing downloaded.

    python examples/shortcut_learning.py --out demo_output
    python examples/shortcut_learning.py --seeds 0 1 2   # a separation table over seeds
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gradcam_callback import GradCAMCallback
from gradcam_callback.synthetic import ShortcutShapes

LAYER = "features"


class SmallCNN(LightningModule):
    def __init__(self, num_classes: int = 3, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(c_in: int, c_out: int, pool: bool = True) -> list[nn.Module]:
            layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                      nn.ReLU(inplace=True)]
            return [*layers, nn.MaxPool2d(2)] if pool else layers

        self.features = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64),
                                      *block(64, 64, pool=False))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self(batch["image"]), batch["label"])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        correct = (self(batch["image"]).argmax(1) == batch["label"]).float().mean()
        self.log("val_acc", correct)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class PrintTable(Callback):
    """Prints one line per epoch from the metrics GradCAMCallback just logged."""

    def __init__(self, gradcam: GradCAMCallback) -> None:
        self.gradcam = gradcam
        self.rows: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        m = {k.split(f"gradcam/{LAYER}/")[-1]: v for k, v in self.gradcam.last_metrics.items()}
        row = {
            "epoch": trainer.current_epoch,
            "val_acc": float(trainer.callback_metrics["val_acc"]),
            "object": m["energy_in_mask/object_mask"],
            "patch": m["energy_in_mask/shortcut_mask"],
            "object_lift": m["lift/object_mask"],
            "patch_lift": m["lift/shortcut_mask"],
            "consistency": m["location_consistency"],
            "patch_lift_ci95": m["lift/shortcut_mask_ci95"],
            "object_lift_ci95": m["lift/object_mask_ci95"],
            "consistency_ci95": m["location_consistency_ci95"],
            "drift": m.get("drift"),  # none at the first run: nothing earlier to compare
            # the causal side: the drop in the predicted class's probability when the
            # patch (the shape) is removed, and deletion of the map's top against chance
            "patch_deletion": m.get("faithfulness/mask_deletion/shortcut_mask"),
            "object_deletion": m.get("faithfulness/mask_deletion/object_mask"),
            "deletion_vs_random": m.get("faithfulness/deletion_vs_random"),
        }
        self.rows.append(row)
        drift = "-" if row["drift"] is None else f"{row['drift']:.2f}"
        print(f"  {row['epoch']:>5} {row['val_acc']:>8.2f} {row['object_lift']:>12.2f} "
              f"{row['patch_lift']:>11.2f} {row['consistency']:>12.2f} {drift:>7}",
              flush=True)


def run(name: str, train_shortcut: float, args: argparse.Namespace, seed: int = 0
        ) -> dict[str, float | str]:
    """Train one model; print its table and verdict; return the last epoch's row and the
    path of the checkpoint Lightning saved."""
    seed_everything(seed, verbose=False)
    # seed 0 keeps the demo's own data (dataset seeds 1 and 2); other seeds draw new images
    train = ShortcutShapes(args.train_size, image_size=64, shortcut_prob=train_shortcut,
                           seed=1 + 100 * seed)
    val = ShortcutShapes(256, image_size=64, shortcut_prob=0.0, seed=2 + 100 * seed)
    tag = name if seed == 0 else f"{name}_seed{seed}"
    gradcam = GradCAMCallback(LAYER, num_samples=8, class_names=train.class_names,
                              target="both", save_gif=False)
    table = PrintTable(gradcam)
    logger = TensorBoardLogger(args.out / "tensorboard", name=tag, version=0)
    trainer = Trainer(max_epochs=args.epochs, logger=logger, callbacks=[gradcam, table],
                      accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=10, num_sanity_val_steps=0)
    print(f"\n[{tag}] trained with the patch telling the class "
          f"{train_shortcut:.0%} of the time; validated with random patches")
    print(f"  {'epoch':>5} {'val acc':>8} {'object lift':>12} {'patch lift':>11} "
          f"{'consistency':>12} {'drift':>7}")
    trainer.fit(SmallCNN(), DataLoader(train, batch_size=64, shuffle=True),
                DataLoader(val, batch_size=128))
    strip = args.out / f"filmstrip_{tag}.png"
    Image.fromarray(gradcam.last_filmstrip.permute(1, 2, 0).numpy()).save(strip)
    final = table.rows[-1]
    patch_area = train.shortcut_mask.float().mean().item()
    if final["patch_lift"] > max(final["object_lift"], 2.0):
        verdict = (f"SHORTCUT: the patch ({patch_area:.0%} of the image) holds "
                   f"{final['patch_lift']:.1f}x its share of the evidence, the shapes "
                   f"{final['object_lift']:.1f}x; validation accuracy {final['val_acc']:.0%}.")
    else:
        verdict = (f"OK: the shapes hold {final['object_lift']:.1f}x their share of the "
                   f"evidence, the patch {final['patch_lift']:.1f}x; validation accuracy "
                   f"{final['val_acc']:.0%}.")
    print(f"  verdict: {verdict}")
    if final["patch_deletion"] is not None and final["object_deletion"] is not None:
        ratio = final["deletion_vs_random"]
        print(f"  removing the patch costs the model {final['patch_deletion']:.2f} of its "
              f"confidence, removing the shape {final['object_deletion']:.2f}; deleting the "
              f"map's top costs {'-' if ratio is None else f'{ratio:.1f}x'} what random "
              "cells of the same area cost")
    print(f"  filmstrip: {strip}")
    return {**final, "checkpoint": trainer.checkpoint_callback.best_model_path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=1536)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="model and data seeds; several print a separation table")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*(num_workers|LeafSpec|logging interval).*")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    args.out.mkdir(parents=True, exist_ok=True)

    finals = []
    for seed in args.seeds:
        for name, prob in (("shortcut", 1.0), ("honest", 0.0)):
            finals.append({"run": name, "seed": seed, **run(name, prob, args, seed)})
    checkpoint = finals[0]["checkpoint"]
    if len(args.seeds) > 1:
        print("\nLast epoch (mean ± 95% interval over 256 validation images):")
        print(f"  {'run':<9} {'seed':>4} {'val acc':>7} {'patch lift':>12} {'object lift':>12} "
              f"{'consistency':>12} {'patch del.':>10} {'shape del.':>10} {'del/rand':>8}")
        for row in finals:
            causal = " ".join(_number(row[k], ".2f", 10)
                              for k in ("patch_deletion", "object_deletion"))
            print(f"  {row['run']:<9} {row['seed']:>4} {row['val_acc']:>7.2f} " + " ".join(
                f"{row[k]:>6.2f}±{row[k + '_ci95']:<5.2f}"
                for k in ("patch_lift", "object_lift", "consistency"))
                + f" {causal} {_number(row['deletion_vs_random'], '.1f', 8)}")
    samples = write_samples(args.out)
    print("\nOpen TensorBoard (Images: grids and filmstrips; Scalars: energy and drift):\n"
          f"  tensorboard --logdir {args.out / 'tensorboard'} --samples_per_plugin images=100")
    print("\nExplain images with the shortcut model's checkpoint, from the command line:\n"
          f"  .venv/bin/gradcam-callback explain --model examples.shortcut_learning:SmallCNN "
          f"--checkpoint {checkpoint} --layer features --size 64 "
          f"--class-names {samples / 'class_names.txt'} --out {args.out / 'explained'} "
          f"--image {samples}/*.png")


def _number(value: object, spec: str, width: int) -> str:
    """``value`` formatted, or ``-`` when there is none (an undefined scalar)."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def write_samples(out: Path) -> Path:
    """A few validation images as PNG files, and the class names, for the CLI."""
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    data = ShortcutShapes(4, shortcut_prob=0.0, seed=3)
    for i in range(len(data)):
        item = data[i]
        pixels = (item["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        name = data.class_names[int(item["label"])]
        Image.fromarray(pixels).save(folder / f"{i}_{name}.png")
    (folder / "class_names.txt").write_text("\n".join(data.class_names) + "\n")
    return folder


if __name__ == "__main__":
    main()
