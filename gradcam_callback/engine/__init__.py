"""The engine: class activation maps as pure tensor functions. Imports torch only.

- :mod:`.cam`: :func:`compute_cam`, :func:`explain_batch`, :class:`Explanation`.
- :mod:`.methods`: the method registry (:func:`register_method`, :func:`available_methods`).
- :mod:`.layers`: which layer to explain (by module, dotted name, or chosen automatically).
- :mod:`.transforms`: reading a layer's output as ``(N, C, h, w)`` maps.
- :mod:`.targets`: which score to explain, and the logits in a model's output.
- :mod:`.capture`, :mod:`.scopes`: the hook and the state-restoring scopes.
"""

from __future__ import annotations

from gradcam_callback.engine.cam import Explanation, compute_cam, explain_batch
from gradcam_callback.engine.layers import find_last_spatial_layer, resolve_layer
from gradcam_callback.engine.methods import (
    CAM_METHODS,
    available_methods,
    get_method,
    register_method,
)
from gradcam_callback.engine.transforms import vit_reshape_transform

__all__ = [
    "CAM_METHODS",
    "Explanation",
    "available_methods",
    "compute_cam",
    "explain_batch",
    "find_last_spatial_layer",
    "get_method",
    "register_method",
    "resolve_layer",
    "vit_reshape_transform",
]
