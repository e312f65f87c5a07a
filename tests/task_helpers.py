"""Tiny models and generated data for each task: binary (one logit), multi-label,
segmentation and regression, trained with the loss each task is trained with."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

SIZE = 32
STRIPES = (2, 13, 24)  # left edges of the three 6-pixel-wide stripe positions


class TaskStripes(Dataset):
    """32x32 noise with bright vertical stripes at up to three positions.

    - ``binary``: one stripe, left (label 0) or right (label 1); labels float ``(1,)``.
    - ``multilabel``: each position independently striped; multi-hot float labels ``(3,)``.
    - ``segmentation``: one stripe at a random position, class 1 (left half) or 2 (right
      half) by where it lies; the label is the class mask ``(H, W)`` long, 0 = background.
    - ``regression``: one stripe whose brightness is the label ``(1,)`` float.
    """

    def __init__(self, task: str, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.task = task
        self.images = 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
        labels: list[torch.Tensor] = []
        for i in range(n):
            if task == "binary":
                side = int(torch.randint(0, 2, (1,), generator=g))
                start = STRIPES[0] if side == 0 else STRIPES[2]
                self.images[i, :, :, start : start + 6] += 0.7
                labels.append(torch.tensor([float(side)]))
            elif task == "multilabel":
                present = torch.rand(3, generator=g) < 0.5
                for k, start in enumerate(STRIPES):
                    if present[k]:
                        self.images[i, :, :, start : start + 6] += 0.7
                labels.append(present.float())
            elif task == "segmentation":
                start = int(torch.randint(0, SIZE - 6, (1,), generator=g))
                mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
                mask[:, start : start + 6] = 1 if start + 3 < SIZE // 2 else 2
                self.images[i, :, :, start : start + 6] += 0.7
                labels.append(mask)
            else:
                value = float(torch.rand(1, generator=g))
                self.images[i, :, :, STRIPES[1] : STRIPES[1] + 6] += 0.3 + 0.7 * value
                labels.append(torch.tensor([value]))
        self.labels = torch.stack(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return (self.images[index] - 0.5) / 0.25, self.labels[index]


OUTPUTS = {"binary": 1, "multilabel": 3, "segmentation": 3, "regression": 1}


class LitTask(LightningModule):
    """A small CNN per task: ``features`` (the layer explained) then the task's head."""

    def __init__(self, task: str, lr: float = 0.05) -> None:
        super().__init__()
        self.task = task
        self.lr = lr
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        outputs = OUTPUTS[task]
        if task == "segmentation":  # per-pixel logits at half the input's size
            self.head: nn.Module = nn.Conv2d(16, outputs, 1)
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(16, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        out = self(x)
        if self.task in ("binary", "multilabel"):
            return nn.functional.binary_cross_entropy_with_logits(out, y)
        if self.task == "segmentation":
            target = nn.functional.interpolate(y[:, None].float(), size=out.shape[-2:],
                                               mode="nearest")[:, 0].long()
            return nn.functional.cross_entropy(out, target)
        return nn.functional.mse_loss(out, y)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class TaskData(LightningDataModule):
    def __init__(self, task: str, n_train: int = 96, n_val: int = 24) -> None:
        super().__init__()
        self.train_set = TaskStripes(task, n_train, seed=1)
        self.val_set = TaskStripes(task, n_val, seed=2)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=16)


def from_scratch_gradcam(model: nn.Module, inputs: torch.Tensor, score) -> torch.Tensor:
    """Grad-CAM written out: hook ``model.features``, differentiate ``score(output)``
    summed, weights = the gradients' spatial mean, ReLU of the weighted sum, bilinear to
    the input size, per-sample min-max. Eval mode; the model is left as it was."""
    was_training = model.training
    model.eval()
    store = {}
    handle = model.features.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        with torch.enable_grad():
            out = model(inputs)
            activation = store["a"]
            (grads,) = torch.autograd.grad(score(out).sum(), activation)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cams = (weights * activation).sum(1).relu().detach()
    cams = nn.functional.interpolate(cams[:, None], size=inputs.shape[-2:], mode="bilinear",
                                     align_corners=False)[:, 0]
    flat = cams.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return torch.where(high > low, (cams - low) / (high - low).clamp(min=1e-12),
                       torch.zeros_like(cams))
