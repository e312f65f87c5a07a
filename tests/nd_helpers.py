"""Small signal and volume classifiers and their data, for the tests of issue 19."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from gradcam_callback.synthetic_nd import ShortcutSignals, ShortcutVolumes


def signal_net(channels: int = 1, classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(channels, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, classes))


def volume_net(channels: int = 1, classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, classes))


class LitND(pl.LightningModule):
    """A classifier of ``batch[key]`` (dict batches) or ``batch[0]``; logs ``val_acc``."""

    def __init__(self, net: nn.Module, key: str, lr: float = 3e-3) -> None:
        super().__init__()
        self.net, self.key, self.lr = net, key, lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _unpack(self, batch):
        if isinstance(batch, dict):
            return batch[self.key], batch["label"]
        return batch[0], batch[1]

    def training_step(self, batch, batch_idx):
        inputs, labels = self._unpack(batch)
        loss = nn.functional.cross_entropy(self(inputs), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        inputs, labels = self._unpack(batch)
        self.log("val_acc", (self(inputs).argmax(1) == labels).float().mean())

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def world(kind: str, shortcut_prob: float, *, train: int = 256, val: int = 64,
          seed: int = 0) -> tuple[LitND, DataLoader, DataLoader]:
    """A seeded model and loaders: ``kind`` ``"signal"`` or ``"volume"``; the validation
    set's blip or marker is random (``shortcut_prob=0``)."""
    torch.manual_seed(seed)
    if kind == "signal":
        data, net = ShortcutSignals, signal_net()
    else:
        data, net = ShortcutVolumes, volume_net()
    train_set = data(train, shortcut_prob=shortcut_prob, seed=seed)
    val_set = data(val, shortcut_prob=0.0, seed=seed + 1000)
    generator = torch.Generator().manual_seed(seed)
    return (LitND(net, kind), DataLoader(train_set, batch_size=32, shuffle=True,
                                         generator=generator),
            DataLoader(val_set, batch_size=32))
