"""Watch where an image model looks while it trains.

The functional core is :func:`compute_cam`: class activation maps for a batch, computed
without side effects on the model. :class:`GradCAMCallback` logs them to TensorBoard
during Lightning training; the rendering helpers turn maps into pictures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradcam_callback.cam import CAM_METHODS, Explanation, compute_cam, explain_batch
from gradcam_callback.layers import find_last_spatial_layer, resolve_layer, vit_reshape_transform
from gradcam_callback.render import annotated_grid, colormap_lut, heatmap, overlay, to_display

if TYPE_CHECKING:
    from gradcam_callback.callback import GradCAMCallback

__all__ = [
    "CAM_METHODS",
    "Explanation",
    "GradCAMCallback",
    "annotated_grid",
    "colormap_lut",
    "compute_cam",
    "explain_batch",
    "find_last_spatial_layer",
    "heatmap",
    "overlay",
    "resolve_layer",
    "to_display",
    "vit_reshape_transform",
]

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> Any:
    # Lightning is imported only by those who use the callback: compute_cam stays light.
    if name == "GradCAMCallback":
        from gradcam_callback.callback import GradCAMCallback

        return GradCAMCallback
    raise AttributeError(f"module 'gradcam_callback' has no attribute {name!r}")
