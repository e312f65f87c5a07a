"""The samples the callback explains: which ones, how they are read, named and shown.

- :mod:`.reader`: :class:`SampleReader` reads samples by dataset index through the
  loader's own collate (inputs, labels, region masks); :class:`FixedSamples` holds them.
- :mod:`.store`: :class:`SampleStore`, the fixed samples of each stage, read again only
  when their loader changes, with their class names and display.
- :mod:`.display`: how to show the inputs (undo the dataset's normalisation when known).

Nothing here imports Lightning.
"""

from __future__ import annotations

from gradcam_callback.samples.display import Display, choose_display, find_normalize
from gradcam_callback.samples.reader import (
    MASK_THRESHOLD,
    FixedSamples,
    SampleReader,
    dataset_class_names,
    dataset_size,
    empty_masks,
)
from gradcam_callback.samples.store import SampleStore

__all__ = [
    "MASK_THRESHOLD",
    "Display",
    "FixedSamples",
    "SampleReader",
    "SampleStore",
    "choose_display",
    "dataset_class_names",
    "dataset_size",
    "empty_masks",
    "find_normalize",
]
