"""A tiny LightningModule and generated data, shared by the callback, DDP and CLI tests."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

CLASS_NAMES = ["left", "middle", "right"]


class StripeDataset(Dataset):
    """32x32 noise with a bright vertical stripe whose position (left/middle/right) is the class."""

    def __init__(self, n: int, seed: int = 0, as_dict: bool = False, channels: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.images = 0.3 * torch.rand(n, channels, 32, 32, generator=g)
        for i, label in enumerate(self.labels.tolist()):
            start = 2 + label * 10
            self.images[i, :, :, start : start + 6] += 0.7
        self.as_dict = as_dict

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = (self.images[index] - 0.5) / 0.25  # normalised with mean 0.5, std 0.25
        if self.as_dict:
            return {"image": image, "label": self.labels[index], "id": index}
        return image, self.labels[index]


class LitTiny(LightningModule):
    def __init__(self, channels: int = 3, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.features(x))

    @staticmethod
    def _unpack(batch):
        return (batch["image"], batch["label"]) if isinstance(batch, dict) else batch

    def training_step(self, batch, batch_idx):
        x, y = self._unpack(batch)
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = self._unpack(batch)
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = self._unpack(batch)
        self.log("test_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class StripeData(LightningDataModule):
    def __init__(self, n_train: int = 96, n_val: int = 24, as_dict: bool = False,
                 channels: int = 3, batch_size: int = 16) -> None:
        super().__init__()
        self.train_set = StripeDataset(n_train, seed=1, as_dict=as_dict, channels=channels)
        self.val_set = StripeDataset(n_val, seed=2, as_dict=as_dict, channels=channels)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class ShapesData(LightningDataModule):
    """ShortcutShapes dict batches (with object_mask and shortcut_mask) at 32 px."""

    def __init__(self, n_train: int = 64, n_val: int = 8) -> None:
        super().__init__()
        from gradcam_callback.synthetic import ShortcutShapes

        self.train_set = ShortcutShapes(n_train, image_size=32, seed=1)
        self.val_set = ShortcutShapes(n_val, image_size=32, seed=2, shortcut_prob=0.0)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=16)


def run_ddp_script(script, out, timeout: int = 300) -> list[dict]:
    """Run a 2-process DDP script of this folder (it saves ``rank<r>.pt`` into ``out``) and
    return what each rank saved; fails with the script's stderr if it did not end well."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    path = Path(__file__).resolve().parent / script
    result = subprocess.run([sys.executable, str(path), str(out)], capture_output=True,
                            text=True, timeout=timeout, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(Path(out) / f"rank{r}.pt") for r in (0, 1)]
