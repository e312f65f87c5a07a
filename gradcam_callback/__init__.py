"""Watch where an image model looks while it trains.

The functional core is :func:`compute_cam`: class activation maps for a batch, computed
without side effects on the model. Rendering helpers turn maps into overlays.
"""

from __future__ import annotations

from gradcam_callback.cam import CAM_METHODS, Explanation, compute_cam, explain_batch
from gradcam_callback.layers import find_last_spatial_layer, resolve_layer, vit_reshape_transform
from gradcam_callback.render import colormap_lut, overlay

__all__ = [
    "CAM_METHODS",
    "Explanation",
    "colormap_lut",
    "compute_cam",
    "explain_batch",
    "find_last_spatial_layer",
    "overlay",
    "resolve_layer",
    "vit_reshape_transform",
]

__version__ = "0.1.0.dev0"
