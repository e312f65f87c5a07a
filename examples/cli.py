"""LightningCLI for the demo's model and data: configure GradCAMCallback in YAML.

    python examples/cli.py fit --config gradcam.yaml

with the ``gradcam.yaml`` shown in the README (any ``trainer:`` option works as usual).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader

from gradcam_callback.synthetic import ShortcutShapes

_spec = importlib.util.spec_from_file_location(
    "shortcut_learning", Path(__file__).with_name("shortcut_learning.py"))
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
SmallCNN = _example.SmallCNN


class ShapesData(LightningDataModule):
    """ShortcutShapes: training with the corner-patch shortcut at ``shortcut_prob``."""

    def __init__(self, shortcut_prob: float = 1.0, train_size: int = 1536,
                 batch_size: int = 64) -> None:
        super().__init__()
        self.train_set = ShortcutShapes(train_size, shortcut_prob=shortcut_prob, seed=1)
        self.val_set = ShortcutShapes(256, shortcut_prob=0.0, seed=2)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=128)


if __name__ == "__main__":
    LightningCLI(SmallCNN, ShapesData)
