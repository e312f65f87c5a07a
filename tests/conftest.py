"""Small models built in code; nothing is downloaded. Every test starts from the same
random state, and no test may let a NaN reach ``callback_metrics`` or a logger."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from gradcam_callback.lightning import sinks, trainer_api

# Two cores: one thread per xdist worker (make test runs two), both without xdist.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Whatever ran before on this worker (xdist hands tests out as they finish, so that
    changes from run to run), a test that builds a model without seeding gets the same
    weights every time."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _no_nan_is_published(monkeypatch):
    """Every scalar the callback puts into ``callback_metrics`` or hands to a logger is
    finite (an undefined one is left out); checked after the test, since the callback's
    failure policy would swallow an error raised inside its run."""
    seen: list[tuple[str, float]] = []
    publish, log_scalars = trainer_api.publish, sinks.PictureSinks.log_scalars

    def record(scalars):
        seen.extend((k, float(v)) for k, v in scalars.items() if not math.isfinite(float(v)))

    def checked_publish(trainer, scalars):
        record(scalars)
        publish(trainer, scalars)

    def checked_log_scalars(self, scalars, step):
        record(scalars)
        log_scalars(self, scalars, step)

    monkeypatch.setattr(trainer_api, "publish", checked_publish)
    monkeypatch.setattr(sinks.PictureSinks, "log_scalars", checked_log_scalars)
    yield
    assert not seen, f"non-finite scalars were published: {seen[:5]}"


class TinyCNN(nn.Module):
    """Conv features (with BatchNorm, in-place ReLU and dropout) and a linear head."""

    def __init__(self, num_classes: int = 5, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN()


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
