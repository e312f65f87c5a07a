"""Fit with strategy="ddp" on 2 CPU processes (gloo), a model whose maps start empty, and
an EarlyStopping on every GradCAMCallback scalar; run by tests/test_undefined.py.

Each rank saves the gradcam values in ``trainer.callback_metrics`` after the first and the
last validation, and the epoch it stopped at.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import ShapesData
from tests.test_undefined import MONITORED, PREFIX, EmptyAtFirst


class Keep(Callback):
    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items()
                              if k.startswith("gradcam")})


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    out = Path(sys.argv[1])
    seed_everything(0)
    keep = Keep()
    stoppers = [EarlyStopping(monitor=PREFIX + name, mode="max", patience=100)
                for name in MONITORED]
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, default_root_dir=out,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[GradCAMCallback("features", num_samples=2, metric_samples=16), keep,
                   *stoppers, ModelCheckpoint(dirpath=out / "ckpt",
                                              monitor=PREFIX + "location_consistency")],
    )
    trainer.fit(EmptyAtFirst(), ShapesData())
    torch.save({"first": keep.seen[0], "last": keep.seen[-1], "epoch": trainer.current_epoch},
               out / f"rank{trainer.global_rank}.pt")
