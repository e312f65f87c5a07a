"""Pictures as bytes (PNG, JPEG, animated GIF) and as PIL images for loggers (Pillow, only
here and in the grid)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from gradcam_callback._checks import check_choice

__all__ = ["IMAGE_FORMATS", "encode_gif", "encode_image", "to_pil"]

IMAGE_FORMATS = ("png", "jpeg")


def encode_image(picture: Tensor, image_format: str = "png") -> bytes:
    """Encode uint8 ``(3, H, W)`` as PNG or JPEG bytes.

    PNG is lossless and written with zlib level 1: for the noisy, photo-like content of
    CAM grids it is about as small as the default level and several times faster. JPEG
    (quality 90) is several times smaller again and faster still; the captions are light
    on dark, so chroma subsampling leaves them sharp.
    """
    check_choice("image_format", image_format, IMAGE_FORMATS)
    buffer = io.BytesIO()
    image = to_pil(picture)
    if image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def to_pil(picture: Tensor) -> Image.Image:
    """uint8 ``(3, H, W)`` as a PIL RGB image (what W&B, MLflow and most loggers accept)."""
    return Image.fromarray(_as_array(picture.permute(1, 2, 0).contiguous()))


def encode_gif(frames: Sequence[Tensor], duration_ms: int = 700) -> bytes:
    """An endlessly looping animated GIF of uint8 ``(3, H, W)`` frames of one size."""
    if not frames:
        raise ValueError("encode_gif needs at least one frame")
    pictures = [to_pil(frame) for frame in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=duration_ms, loop=0)
    return buffer.getvalue()


def _as_array(picture: Tensor) -> np.ndarray:
    return picture.numpy()
