"""Fit with strategy="ddp" on 2 CPU processes (gloo), ``every_n_steps=2`` and validation
only every second epoch, without a sanity check; run by tests/test_recomposed.py.

Each rank saves the steps explained (rank zero's history), its failures, the gradcam values
in ``trainer.callback_metrics`` and the number of samples its statistics counted.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from lightning.pytorch import Trainer, seed_everything

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import LitTiny, StripeData

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    out = Path(sys.argv[1])
    seed_everything(0)
    gradcam = GradCAMCallback("features", num_samples=2, every_n_steps=2, metric_samples=24)
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
                      check_val_every_n_epoch=2, num_sanity_val_steps=0, default_root_dir=out,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[gradcam])
    trainer.fit(LitTiny(), StripeData())
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("gradcam")}
    torch.save({"steps": gradcam.history.steps, "failures": len(gradcam.failures),
                "values": values, "count": gradcam.last_statistics.count},
               out / f"rank{trainer.global_rank}.pt")
