"""Maps into pictures: colormaps, overlays, the explanation grid, filmstrips, encoders.

Knows nothing of models or Lightning: tensors in, uint8 pictures (or bytes) out.
"""

from __future__ import annotations

from gradcam_callback.render.captions import (
    class_name,
    prediction_captions,
    run_header,
    sample_title,
)
from gradcam_callback.render.colormap import colormap_lut, heatmap
from gradcam_callback.render.encode import IMAGE_FORMATS, encode_gif, encode_image
from gradcam_callback.render.filmstrip import filmstrip, filmstrip_frames
from gradcam_callback.render.grid import annotated_grid, explanation_grid
from gradcam_callback.render.overlay import overlay, resize_tiles, to_display, to_uint8

__all__ = [
    "IMAGE_FORMATS",
    "annotated_grid",
    "class_name",
    "colormap_lut",
    "encode_gif",
    "encode_image",
    "explanation_grid",
    "filmstrip",
    "filmstrip_frames",
    "heatmap",
    "overlay",
    "prediction_captions",
    "resize_tiles",
    "run_header",
    "sample_title",
    "to_display",
    "to_uint8",
]
