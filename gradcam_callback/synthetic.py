"""A tiny generated dataset with a planted shortcut, and masks to measure it by.

Each image shows one shape whose *kind* is the class (square, disc, triangle, cross, ring,
diamond) at a random place, size and colour over a textured background. In the top-left
corner sits a small patch whose colour is the class's own colour with probability
``shortcut_prob``, and a random class colour otherwise. A model trained with
``shortcut_prob=1.0`` can reach perfect training accuracy by reading the patch alone and
ignoring the shape: shortcut learning, on demand, in seconds on a CPU.

Items are dicts with the ``object_mask`` and ``shortcut_mask`` that Grad-CAM energy is
measured against. Everything is generated from ``(seed, index)``: the same dataset on
every machine, no files, no downloads.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SHAPE_NAMES", "SeededSamples", "ShortcutShapes"]

SHAPE_NAMES = ("square", "disc", "triangle", "cross", "ring", "diamond")
_PATCH_COLOURS = torch.tensor([
    [1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.15, 0.3, 1.0],
    [1.0, 0.9, 0.1], [0.9, 0.1, 0.9], [0.1, 0.9, 0.9],
])


class SeededSamples(Dataset):
    """``n`` samples, each generated from ``(seed, index)`` alone: the same data on every
    machine, in any order of access, without files. Subclasses draw item ``index`` from
    :meth:`generator`."""

    def __init__(self, n: int, seed: int = 0) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index``.

        Raises:
            IndexError: ``index`` is not one of the ``n`` samples.
        """
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return torch.Generator().manual_seed(self.seed * 1_000_003 + index)


class ShortcutShapes(SeededSamples):
    """Shapes to classify, with a corner patch that may give the answer away.

    Args:
        n: number of samples.
        image_size: side of the square images, in pixels (>= 16).
        num_classes: how many shape kinds, 2 to 6 (the first ones of ``SHAPE_NAMES``).
        shortcut_prob: probability that the patch colour matches the class.
        seed: the dataset's seed; the same seed gives the same images.
        patch_fraction: the patch's side as a fraction of the image side. At 0.25 the patch
            covers about as much of the image as a shape does, and a small CNN with global
            average pooling takes the shortcut; much smaller patches get diluted by the
            pooling and the model learns the shapes as well.

    Each item is a dict: ``image`` float ``(3, S, S)`` in ``[0, 1]``, ``label`` int64,
    ``object_mask`` and ``shortcut_mask`` bool ``(S, S)``.

    Example::

        >>> data = ShortcutShapes(4, image_size=32, shortcut_prob=1.0)
        >>> item = data[0]
        >>> item["image"].shape, item["object_mask"].any().item(), int(item["shortcut_mask"].sum())
        (torch.Size([3, 32, 32]), True, 64)
    """

    def __init__(
        self,
        n: int,
        image_size: int = 64,
        num_classes: int = 3,
        shortcut_prob: float = 1.0,
        seed: int = 0,
        patch_fraction: float = 0.25,
    ) -> None:
        super().__init__(n, seed)
        if not isinstance(image_size, int) or image_size < 16:
            raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
        if not 2 <= num_classes <= len(SHAPE_NAMES):
            raise ValueError(
                f"num_classes must be 2..{len(SHAPE_NAMES)} ({', '.join(SHAPE_NAMES)}), "
                f"got {num_classes!r}"
            )
        if not 0.0 <= shortcut_prob <= 1.0:
            raise ValueError(f"shortcut_prob must be in [0, 1], got {shortcut_prob!r}")
        if not 0.0 < patch_fraction < 0.5:
            raise ValueError(f"patch_fraction must be in (0, 0.5), got {patch_fraction!r}")
        self.image_size = image_size
        self.num_classes = num_classes
        self.shortcut_prob = shortcut_prob
        self.patch = max(2, round(patch_fraction * image_size))
        self.class_names = list(SHAPE_NAMES[:num_classes])
        coords = torch.arange(image_size, dtype=torch.float32) + 0.5
        self._yy, self._xx = torch.meshgrid(coords, coords, indexing="ij")
        self.shortcut_mask = torch.zeros(image_size, image_size, dtype=torch.bool)
        self.shortcut_mask[: self.patch, : self.patch] = True

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        g = self.generator(index)
        label = int(torch.randint(self.num_classes, (1,), generator=g))
        image = self._background(g)
        shape = self._shape(label, g)
        colour = 0.35 + 0.65 * torch.rand(3, 1, 1, generator=g)
        image = torch.where(shape, colour, image)

        honest = torch.rand((), generator=g) < self.shortcut_prob
        patch_class = label if honest else int(torch.randint(self.num_classes, (1,), generator=g))
        image[:, : self.patch, : self.patch] = _PATCH_COLOURS[patch_class].view(3, 1, 1)
        return {
            "image": image.clamp(0, 1),
            "label": torch.tensor(label),
            "object_mask": shape & ~self.shortcut_mask,
            "shortcut_mask": self.shortcut_mask.clone(),
        }

    def _background(self, g: torch.Generator) -> Tensor:
        size = self.image_size
        coarse = torch.rand(1, 3, 4, 4, generator=g)
        smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                 align_corners=False)[0]
        return 0.12 + 0.25 * smooth + 0.12 * torch.rand(3, size, size, generator=g)

    def _shape(self, label: int, g: torch.Generator) -> Tensor:
        size = self.image_size
        low = self.patch + 2  # keep the shape clear of the corner patch
        radius = size * (0.12 + 0.1 * float(torch.rand((), generator=g)))
        cy = low + radius + float(torch.rand((), generator=g)) * (size - low - 2 * radius - 1)
        cx = low + radius + float(torch.rand((), generator=g)) * (size - low - 2 * radius - 1)
        dy, dx = self._yy - cy, self._xx - cx
        kind = SHAPE_NAMES[label]
        if kind == "square":
            return (dy.abs() <= radius * 0.8) & (dx.abs() <= radius * 0.8)
        if kind == "disc":
            return dy.square() + dx.square() <= radius**2
        if kind == "triangle":
            return (dy <= radius * 0.7) & (dy >= 2 * dx.abs() - radius)
        if kind == "cross":
            bar = radius * 0.3
            return ((dy.abs() <= bar) & (dx.abs() <= radius)) | (
                (dx.abs() <= bar) & (dy.abs() <= radius))
        if kind == "ring":
            distance = (dy.square() + dx.square()).sqrt()
            return (distance <= radius) & (distance >= radius * 0.55)
        return dy.abs() + dx.abs() <= radius  # diamond
