"""Watch where an image model looks while it trains.

The functional core is :func:`compute_cam`: class activation maps for a batch, computed
without side effects on the model. :class:`GradCAMCallback` logs them during Lightning
training; the rendering helpers turn maps into pictures.

Importing this package loads torch only: the renderer (Pillow, matplotlib) loads on first
use of a rendering helper, Lightning on first use of :class:`GradCAMCallback`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gradcam_callback.engine import (
    CAM_METHODS,
    Explanation,
    available_methods,
    compute_cam,
    explain_batch,
    find_last_spatial_layer,
    register_method,
    resolve_layer,
    vit_reshape_transform,
)

if TYPE_CHECKING:
    from gradcam_callback.lightning import GradCAMCallback
    from gradcam_callback.render import (
        annotated_grid,
        colormap_lut,
        explanation_grid,
        heatmap,
        overlay,
        to_display,
    )

__all__ = [
    "CAM_METHODS",
    "Explanation",
    "GradCAMCallback",
    "annotated_grid",
    "available_methods",
    "colormap_lut",
    "compute_cam",
    "explain_batch",
    "explanation_grid",
    "find_last_spatial_layer",
    "heatmap",
    "overlay",
    "register_method",
    "resolve_layer",
    "to_display",
    "vit_reshape_transform",
]

__version__ = "0.1.0.dev0"

# Loaded on first access, so `import gradcam_callback` stays torch-only.
_LAZY = {
    "GradCAMCallback": "gradcam_callback.lightning",
    "annotated_grid": "gradcam_callback.render",
    "colormap_lut": "gradcam_callback.render",
    "explanation_grid": "gradcam_callback.render",
    "heatmap": "gradcam_callback.render",
    "overlay": "gradcam_callback.render",
    "to_display": "gradcam_callback.render",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradcam_callback' has no attribute {name!r}")
