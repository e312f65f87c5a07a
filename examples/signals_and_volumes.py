"""Signals and volumes: the same callback, zero configuration, on a Conv1d and a Conv3d model.

Trains a small classifier of generated signals (``(N, 1, 128)``: is the event a bump or a
dip?) and one of generated volumes (``(N, 1, 16, 16, 16)``: is the ball faint or bright?),
each twice: once with a planted shortcut (a blip at a fixed time, a marker in a corner
that gives the answer away in training) and once without. Validation samples carry the
cue at random, so a model that learned the shortcut fails there, and the callback's lift
in the cue's mask says so while it trains.

    python examples/signals_and_volumes.py --out runs/nd

prints a table of lift per run and writes the last grid, filmstrip and class maps of
each run of the first seed as PNGs (the README's come from ``--out docs --seeds 0 1 2``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradcam_callback import GradCAMCallback
from gradcam_callback.synthetic_nd import ShortcutSignals, ShortcutVolumes

CUES = {"signal": ("blip_mask", "event_mask"), "volume": ("marker_mask", "object_mask")}


def network(kind: str) -> nn.Module:
    if kind == "signal":
        return nn.Sequential(
            nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 2))
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 2))


class Classifier(pl.LightningModule):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.net = kind, network(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[self.kind]), batch["label"])

    def validation_step(self, batch, batch_idx):
        accuracy = (self(batch[self.kind]).argmax(1) == batch["label"]).float().mean()
        self.log("val_acc", accuracy)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def run(kind: str, shortcut: bool, seed: int, epochs: int,
        out: Path | None) -> dict[str, float]:
    """Train one model; return its validation accuracy and lifts; save its pictures into
    ``out`` (unless ``None``)."""
    torch.manual_seed(seed)
    data = ShortcutSignals if kind == "signal" else ShortcutVolumes
    train = data(512, shortcut_prob=1.0 if shortcut else 0.0, seed=seed)
    val = data(64, shortcut_prob=0.0, seed=seed + 1000)
    callback = GradCAMCallback(input_key=kind, class_names=list(data.class_names),
                               metric_samples=64, num_samples=4)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Classifier(kind),
                    DataLoader(train, batch_size=32, shuffle=True,
                               generator=torch.Generator().manual_seed(seed)),
                    DataLoader(val, batch_size=32))
    name = f"{kind}_{'shortcut' if shortcut else 'honest'}"
    pictures = (("grid", callback.last_grid), ("filmstrip", callback.last_filmstrip),
                ("class_maps", callback.last_class_maps))
    for what, picture in pictures:
        if out is None or picture is None:
            continue
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(out / f"{name}_{what}.png")
    metrics = trainer.callback_metrics
    prefix = f"gradcam/{callback.layer_name}/lift/"
    cue, honest = CUES[kind]
    return {"val_acc": float(metrics["val_acc"]), "cue": float(metrics[prefix + cue]),
            "cue_ci95": float(metrics[prefix + cue + "_ci95"]),
            "honest": float(metrics[prefix + honest]),
            "honest_ci95": float(metrics[prefix + honest + "_ci95"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/signals_and_volumes"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    print("| input | run | seed | val acc | lift in the cue | lift in the real evidence |")
    print("|---|---|---|---|---|---|")
    for kind in ("signal", "volume"):
        for shortcut in (True, False):
            for seed in args.seeds:
                found = run(kind, shortcut, seed, args.epochs,  # pictures of the first seed
                            args.out if seed == args.seeds[0] else None)
                print(f"| {kind} | {'shortcut' if shortcut else 'honest'} | {seed} | "
                      f"{found['val_acc']:.2f} | {found['cue']:.2f} ± {found['cue_ci95']:.2f}"
                      " | "
                      f"{found['honest']:.2f} ± {found['honest_ci95']:.2f} |",
                      flush=True)
    print(f"pictures: {args.out}/*.png")


if __name__ == "__main__":
    main()
