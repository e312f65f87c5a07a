"""Tiny models and generated data for each task: binary (one logit), multi-label,
segmentation and regression, trained with the loss each task is trained with."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

SIZE = 32


def _square(image, g, channel: int, side: int = 8) -> tuple[int, int]:
    top, left = (int(v) for v in torch.randint(0, SIZE - side, (2,), generator=g))
    image[channel, top : top + side, left : left + side] += 0.7
    return top, left


class TaskStripes(Dataset):
    """32x32 noise with coloured squares and stripes; what they mean is the task's.

    - ``binary``: positive (1) when a red 8x8 square is somewhere; labels float ``(1,)``.
    - ``multilabel``: label k when a square of colour k (red, green, blue) is somewhere,
      each independently; multi-hot float labels ``(3,)``.
    - ``segmentation``: a red vertical stripe (class 1) and, in half the images, a blue
      10x10 square (class 2); the label is the class mask ``(H, W)`` long, 0 = background.
    - ``regression``: a grey square whose brightness is the label ``(1,)`` float.
    """

    def __init__(self, task: str, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.task = task
        self.images = 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
        labels: list[torch.Tensor] = []
        for i in range(n):
            image = self.images[i]
            if task == "binary":
                positive = bool(torch.rand(1, generator=g) < 0.5)
                if positive:
                    _square(image, g, 0)
                labels.append(torch.tensor([float(positive)]))
            elif task == "multilabel":
                present = torch.rand(3, generator=g) < 0.5
                for k in range(3):
                    if present[k]:
                        _square(image, g, k)
                labels.append(present.float())
            elif task == "segmentation":
                mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
                start = int(torch.randint(0, SIZE - 6, (1,), generator=g))
                image[0, :, start : start + 6] += 0.7
                mask[:, start : start + 6] = 1
                if torch.rand(1, generator=g) < 0.5:
                    top, left = _square(image, g, 2, side=10)
                    mask[top : top + 10, left : left + 10] = 2
                labels.append(mask)
            else:
                value = float(torch.rand(1, generator=g))
                top, left = (int(v) for v in torch.randint(0, SIZE - 8, (2,), generator=g))
                image[:, top : top + 8, left : left + 8] += 0.2 + 0.7 * value
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
        self.save_hyperparameters()
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
