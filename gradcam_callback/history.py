"""The maps of every logged validation run, for drift and the filmstrip; checkpointed.

Maps are kept small, float16, on the CPU: images with the longer side at most
:data:`HISTORY_SIZE` (64 runs of 8 samples cost about 4 MB), volumes at most 32 voxels a
side, signals at most 256 steps (:data:`HISTORY_SIDES`).

The checkpointed state is versioned (:data:`STATE_VERSION`); states of the 0.1 callback
(keys ``history_*``) load too. Maps of another size than the current ones (the
validation images were resized between runs or across a resume) are resized into the
history; another number of samples starts a new history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradcam_callback.metrics import attention_drift
from gradcam_callback.ops import resize_maps, shrink_maps, shrunk_size

__all__ = ["HISTORY_SIDES", "HISTORY_SIZE", "History", "evenly_spaced", "history_size"]

HISTORY_SIZE = 64
HISTORY_SIDES = {1: 256, 2: HISTORY_SIZE, 3: 32}
"""The longest side kept per spatial rank: signals 256 steps, images 64 px, volumes 32
voxels (64 runs of 8 volumes cost about 32 MB)."""
STATE_VERSION = 3
"""3: the callback's state adds the sample options; 2: ``epochs``/``steps``/``maps``;
1 (0.1): ``history_epochs``/``history_steps``/``history_maps``."""


@dataclass
class History:
    """Maps per logged run, with the epoch and global step of each.

    Attributes:
        epochs: the epoch of each run.
        steps: the global step of each run.
        runs: per run, float16 maps ``(N, *s)`` on the CPU, all of one size.
    """

    epochs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    runs: list[Tensor] = field(default_factory=list)

    @property
    def maps(self) -> Tensor | None:
        """All runs as ``(R, N, *s)`` float32, or ``None`` before the first run."""
        return torch.stack(self.runs).float() if self.runs else None

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, cams: Tensor, epoch: int, step: int) -> dict[str, float]:
        """Keep this run's maps; return ``drift`` (vs the previous run) and
        ``drift_from_start`` (vs the first), means over the samples, from the second run on.
        """
        small = shrink_maps(cams.detach().float().cpu(), HISTORY_SIDES[cams.dim() - 1])
        self.fit_to(small.shape[0], tuple(int(side) for side in cams.shape[1:]))
        drift = {}
        if self.runs:
            current = small.half().float()
            drift["drift"] = attention_drift(self.runs[-1].float(), current).mean().item()
            drift["drift_from_start"] = attention_drift(self.runs[0].float(),
                                                        current).mean().item()
        self.runs.append(small.half())
        self.epochs.append(int(epoch))
        self.steps.append(int(step))
        return drift

    def clear(self) -> None:
        self.epochs.clear()
        self.steps.clear()
        self.runs.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "epochs": list(self.epochs),
            "steps": list(self.steps),
            "maps": torch.stack(self.runs) if self.runs else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (or the 0.1 callback's keys).

        Raises:
            ValueError: the state is not a history (its maps are not ``(R, N, *s)`` with
                one to three spatial dims, or do not match its epochs and steps); the
                history is left empty.
        """
        self.clear()
        maps = state.get("maps", state.get("history_maps"))
        epochs = list(state.get("epochs", state.get("history_epochs", [])))
        steps = list(state.get("steps", state.get("history_steps", [])))
        if maps is None and not epochs:
            return
        if not isinstance(maps, Tensor) or maps.dim() not in (3, 4, 5) or not (
                len(maps) == len(epochs) == len(steps)):
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(
                f"the checkpoint's history is inconsistent: maps {shape} for "
                f"{len(epochs)} epochs and {len(steps)} steps; expected (runs, N, *s) with "
                "one to three spatial dims"
            )
        self.epochs = [int(e) for e in epochs]
        self.steps = [int(s) for s in steps]
        self.runs = [run.half() for run in maps.detach().cpu().unbind(0)]

    def fit_to(self, count: int, size: tuple[int, ...]) -> bool:
        """Make the kept maps comparable with new maps of ``count`` samples at ``size``.

        Maps of another size are resized into the history (the inputs' size changed); a
        different number of samples, or maps of another rank, cannot be matched, so the
        history is cleared. Returns whether the history was kept.
        """
        if not self.runs:
            return True
        if (self.runs[0].shape[0] != count  # other samples: their maps cannot be compared
                or self.runs[0].dim() != len(size) + 1):
            self.clear()
            return False
        target = history_size(size)
        if tuple(self.runs[0].shape[1:]) != target:
            self.runs = [resize_maps(run.float(), target).half() for run in self.runs]
        return True


def history_size(size: tuple[int, ...]) -> tuple[int, ...]:
    """The size the history keeps of maps at ``size`` (:data:`HISTORY_SIDES`).

    Example::

        >>> history_size((128, 96)), history_size((64, 64, 64)), history_size((5000,))
        ((64, 48), (32, 32, 32), (256,))
    """
    return shrunk_size(size, HISTORY_SIDES[len(size)])


def evenly_spaced(count: int, limit: int) -> list[int]:
    """At most ``limit`` indices of ``range(count)``, evenly spread, first and last included.

    Example::

        >>> evenly_spaced(10, 4)
        [0, 3, 6, 9]
    """
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})
