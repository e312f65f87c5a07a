"""Generated signals and volumes with a planted shortcut, and masks to measure it by.

The 1-D and 3-D versions of :class:`~gradcam_callback.synthetic.ShortcutShapes`:

- :class:`ShortcutSignals`: signals ``(1, T)``; the class is the sign of a smooth *event*
  (a bump up, or a dip) at a random time over noise; a short *blip* at a fixed time
  (``blip_mask``) has the class's sign with probability ``shortcut_prob``, a random sign
  otherwise.
- :class:`ShortcutVolumes`: volumes ``(1, D, H, W)``; the class is the brightness of a
  ball (*object*) at a random place, faint or bright; a small *marker* cube in a corner
  of the first slices (``marker_mask``) is bright for the bright class and dim for the
  faint one with probability ``shortcut_prob``, and either at random otherwise.

A model trained with ``shortcut_prob=1.0`` can read the answer off the blip or the
marker alone; with ``0.0`` it has to learn the event or the object. Items are dicts with
``label`` and the masks (``event_mask``, ``object_mask``) of the same rank as the input.
Everything is generated from ``(seed, index)``: no files, no downloads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradcam_callback.synthetic import SeededSamples

__all__ = ["ShortcutSignals", "ShortcutVolumes"]


def _check(shortcut_prob: float) -> None:
    if not 0.0 <= shortcut_prob <= 1.0:
        raise ValueError(f"shortcut_prob must be in [0, 1], got {shortcut_prob!r}")


class ShortcutSignals(SeededSamples):
    """Signals whose class is the sign of an event, with a blip that may give it away.

    Args:
        n: number of samples.
        length: steps per signal (>= 64).
        shortcut_prob: probability that the blip's sign is the class's.
        seed: the dataset's seed.

    Each item: ``signal`` float ``(1, T)``, ``label`` int64 (0 dip, 1 bump),
    ``blip_mask`` and ``event_mask`` bool ``(T,)``.

    Example::

        >>> item = ShortcutSignals(2, length=128)[0]
        >>> item["signal"].shape, int(item["blip_mask"].sum()), item["event_mask"].any().item()
        (torch.Size([1, 128]), 8, True)
    """

    class_names = ("dip", "bump")

    def __init__(self, n: int, length: int = 128, shortcut_prob: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__(n, seed)
        _check(shortcut_prob)
        if not isinstance(length, int) or length < 64:
            raise ValueError(f"length must be an int >= 64, got {length!r}")
        self.length, self.shortcut_prob = length, shortcut_prob
        self.blip = slice(length // 16, length // 16 + 8)
        self.blip_mask = torch.zeros(length, dtype=torch.bool)
        self.blip_mask[self.blip] = True

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        g = self.generator(index)
        label = int(torch.randint(2, (1,), generator=g))
        steps = torch.arange(self.length, dtype=torch.float32)
        signal = 0.3 * torch.randn(self.length, generator=g)
        low = self.blip.stop + 12
        centre = low + float(torch.rand((), generator=g)) * (self.length - low - 12)
        width = 4.0 + 3.0 * float(torch.rand((), generator=g))
        sign = 1.0 if label == 1 else -1.0
        signal += sign * 1.2 * torch.exp(-0.5 * ((steps - centre) / width) ** 2)
        honest = bool(torch.rand((), generator=g) < self.shortcut_prob)
        blip_sign = sign if honest else (1.0 if bool(torch.rand((), generator=g) < 0.5)
                                         else -1.0)
        signal[self.blip] += blip_sign * 2.5
        return {"signal": signal[None], "label": torch.tensor(label),
                "blip_mask": self.blip_mask.clone(),
                "event_mask": (steps - centre).abs() <= 2 * width}


class ShortcutVolumes(SeededSamples):
    """Volumes whose class is the brightness of a ball, with a corner marker that may give
    it away.

    Args:
        n: number of samples.
        size: the volumes' side in voxels (>= 16).
        shortcut_prob: probability that the marker tells the class (bright for "bright",
            dim for "faint"); otherwise it is either at random.
        seed: the dataset's seed.

    Each item: ``volume`` float ``(1, S, S, S)``, ``label`` int64 (0 faint, 1 bright),
    ``marker_mask`` and ``object_mask`` bool ``(S, S, S)``.

    Example::

        >>> item = ShortcutVolumes(2, size=16)[0]
        >>> item["volume"].shape, int(item["marker_mask"].sum())
        (torch.Size([1, 16, 16, 16]), 64)
    """

    class_names = ("faint", "bright")

    def __init__(self, n: int, size: int = 16, shortcut_prob: float = 1.0,
                 seed: int = 0) -> None:
        super().__init__(n, seed)
        _check(shortcut_prob)
        if not isinstance(size, int) or size < 16:
            raise ValueError(f"size must be an int >= 16, got {size!r}")
        self.size, self.shortcut_prob = size, shortcut_prob
        self.marker = max(2, size // 4)
        self.marker_mask = torch.zeros(size, size, size, dtype=torch.bool)
        self.marker_mask[: self.marker, : self.marker, : self.marker] = True
        coords = torch.arange(size, dtype=torch.float32) + 0.5
        self._grid = torch.meshgrid(coords, coords, coords, indexing="ij")

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        g = self.generator(index)
        label = int(torch.randint(2, (1,), generator=g))
        size = self.size
        volume = 0.1 * torch.rand(size, size, size, generator=g)
        radius = size * (0.2 + 0.06 * float(torch.rand((), generator=g)))
        low = self.marker + radius + 1
        centre = [low + float(torch.rand((), generator=g)) * max(0.0, size - radius - low - 1)
                  for _ in range(3)]
        distance = torch.stack([(axis - c) ** 2 for axis, c in zip(self._grid, centre,
                                                                   strict=True)]).sum(0).sqrt()
        shape = distance <= radius
        brightness = (0.75 if label == 1 else 0.55) + 0.3 * (float(torch.rand((), generator=g))
                                                            - 0.5)
        volume = torch.where(shape, brightness, volume)
        honest = bool(torch.rand((), generator=g) < self.shortcut_prob)
        bright = label == 1 if honest else bool(torch.rand((), generator=g) < 0.5)
        volume = torch.where(self.marker_mask, 1.0 if bright else 0.4, volume)
        return {"volume": volume[None], "label": torch.tensor(label),
                "marker_mask": self.marker_mask.clone(), "object_mask": shape & ~self.marker_mask}
