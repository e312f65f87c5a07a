"""Pages: many samples split over several pictures, each within the encoders' limits.

A grid has a column per sample and a filmstrip a row per sample, so with hundreds of
samples one picture would pass JPEG's limit of 65,500 pixels a side (and take long to
encode and to show). Samples are therefore split into pages of at most ``per_page``
(fewer when the tiles are so wide that ``per_page`` columns would not fit), and each page
is its own picture. One page keeps the plain tag; several get ``<tag>/page_<k>``,
``k`` from 1.
"""

from __future__ import annotations

from gradcam_callback._checks import check_choice, check_int
from gradcam_callback.render.encode import IMAGE_FORMATS
from gradcam_callback.render.grid import GAP

__all__ = ["MAX_SIDE", "check_picture_size", "page_slices", "page_tags", "samples_per_page"]

MAX_SIDE = {"jpeg": 65_500, "png": 2**31 - 1}
"""The longest side each format can encode, in pixels (libjpeg's limit for JPEG)."""

_TITLE_ROOM = 400
"""Pixels kept for the row titles left of the columns when fitting a page's width."""


def samples_per_page(per_page: int, tile_width: int, image_format: str = "jpeg") -> int:
    """``per_page``, or fewer so that a row of that many tiles fits ``image_format``.

    Example::

        >>> samples_per_page(16, 128), samples_per_page(1000, 128)
        (16, 465)
    """
    check_int("per_page", per_page, minimum=1)
    check_choice("image_format", image_format, IMAGE_FORMATS)
    column = tile_width + 2 * GAP
    fits = max(1, (min(MAX_SIDE[image_format], 2**16) - _TITLE_ROOM) // column)
    return min(per_page, fits)


def page_slices(count: int, per_page: int) -> list[slice]:
    """Consecutive slices of ``range(count)`` with at most ``per_page`` items each.

    Example::

        >>> page_slices(5, 2)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    check_int("per_page", per_page, minimum=1)
    return [slice(start, min(start + per_page, count)) for start in range(0, count, per_page)]


def page_tags(tag: str, pages: int) -> list[str]:
    """``[tag]`` for one page, else ``tag/page_1`` ... ``tag/page_<pages>``.

    Example::

        >>> page_tags("gradcam/layer4/overlay", 2)
        ['gradcam/layer4/overlay/page_1', 'gradcam/layer4/overlay/page_2']
    """
    if pages <= 1:
        return [tag]
    return [f"{tag}/page_{k}" for k in range(1, pages + 1)]


def check_picture_size(height: int, width: int, image_format: str, what: str,
                       hint: str) -> None:
    """Raise a ``ValueError`` naming ``hint`` when a picture is too large for the format.

    Args:
        height: the picture's height in pixels.
        width: its width.
        image_format: ``"jpeg"`` or ``"png"``.
        what: the picture, for the message (``"the grid"``).
        hint: which options make it smaller (``"lower max_image_size"``).
    """
    limit = MAX_SIDE[check_choice("image_format", image_format, IMAGE_FORMATS)]
    if max(height, width) > limit:
        raise ValueError(
            f"{what} would be {width} x {height} px, but {image_format.upper()} allows at "
            f"most {limit:,} px a side: {hint}"
        )
