"""Image headers: display size without decoding pixels.

PIL's `Image.open` is lazy: it parses the container up to the frame header (JPEG SOF, PNG IHDR) and the
EXIF block, and decodes nothing, ~25 us per file. The size returned is the *displayed* size: EXIF
orientations 5-8 swap width and height, exactly as `load_image` will orient the pixels later.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from PIL import Image

_EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # displayed with width and height swapped


@dataclass(frozen=True)
class ImageHeader:
    width: int  # displayed (after EXIF orientation)
    height: int
    format: str
    mode: str
    orientation: int  # EXIF orientation tag, 1 when absent


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Size, format and mode of an image file from its header only.

    Raises OSError (missing/unreadable/not an image) or PIL.Image.DecompressionBombError (pixel count
    beyond PIL's safety limit); callers turn those into error rows.
    """
    with warnings.catch_warnings():
        # PIL warns between MAX_IMAGE_PIXELS and twice that; only the hard error matters here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            orientation = exif_orientation(image)
            fmt, mode = image.format or "", image.mode
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(width, height, fmt, mode, orientation)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened (not necessarily loaded) image; 1 when absent or corrupt."""
    if image.format not in ("JPEG", "MPO", "TIFF", "WEBP", "PNG"):
        return 1
    if image.format == "PNG" and "exif" not in image.info:
        # PIL's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixel data;
        # only one placed before the pixels (where writers put it) is honoured, keeping this header-only.
        return 1
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a corrupt EXIF block must not hide a valid image size
        return 1
