"""Fit with strategy="ddp" on 2 CPU processes (gloo); run by tests/test_distributed.py.

Lightning re-launches this script for rank 1, so it must be runnable as a file. The second
argument is "tensorboard" (a TensorBoard logger) or "none" (no logger; pictures go to
``image_dir=<out>/gradcam``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import LitTiny, StripeData

if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    out, logger = Path(sys.argv[1]), sys.argv[2]
    seed_everything(0)
    image_dir = None if logger == "tensorboard" else str(out / "gradcam")
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, default_root_dir=out,
        logger=TensorBoardLogger(out, name="tb", version=0) if logger == "tensorboard" else False,
        callbacks=[GradCAMCallback("features", num_samples=4, target="both",
                                   image_dir=image_dir)],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
    )
    trainer.fit(LitTiny(), StripeData())
    (out / f"done_rank{trainer.global_rank}").write_text(str(trainer.global_step))
