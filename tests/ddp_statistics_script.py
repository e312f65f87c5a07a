"""Fit with strategy="ddp" on 2 CPU processes (gloo), with EarlyStopping monitoring a
GradCAMCallback scalar and an alarm that stops training; run by tests/test_statistics.py.

Each rank saves what it saw: the gradcam values in ``trainer.callback_metrics``, the epoch
it stopped at, and the number of samples the statistics counted.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import LitTiny, StripeData

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    out = Path(sys.argv[1])
    seed_everything(0)
    gradcam = GradCAMCallback("features", num_samples=2, metric_samples=64,
                              metric_batch_size=5, alarms={"border_lift": ">=0"},
                              alarm_action="stop")
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, default_root_dir=out,
        logger=False, enable_checkpointing=False,
        callbacks=[gradcam, EarlyStopping(monitor="gradcam/features/border_lift", mode="min",
                                          patience=3, check_on_train_epoch_end=False)],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(LitTiny(), StripeData())
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("gradcam")}
    torch.save({"values": values, "epoch": trainer.current_epoch,
                "count": gradcam.last_statistics.count}, out / f"rank{trainer.global_rank}.pt")
