"""One image file a user hands to `uhd layout` / `uhd infer`: usable, or one line saying why not.

The pipeline's own images are vetted by the validate stage (quarantine with reasons); files given on the command
line are checked here, before a model is loaded and before pixels are decoded: a missing or empty file, text named
.jpg, a header that claims more pixels than the decompression-bomb limit, and pixel data that does not decode.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from .headers import ImageHeader, read_header
from .limits import MAX_PIXELS
from .pixels import load_image


class UnusableImage(ValueError):
    """A file that cannot be used as an image; the message is one line naming the file and the reason."""


def check_image_file(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """The file's header, after the checks that need no pixel decoding."""
    path = Path(path)
    if not path.exists():
        raise UnusableImage(f"{path}: no such file")
    if not path.is_file():
        raise UnusableImage(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise UnusableImage(f"{path}: empty file (0 bytes)")
    try:
        header = read_header(path)
    except Image.DecompressionBombError:
        raise UnusableImage(f"{path}: its header claims more pixels than any image this tool decodes") from None
    except Exception as err:  # PIL: not an image, unknown format, corrupt header
        raise UnusableImage(f"{path}: not an image that can be read ({type(err).__name__})") from None
    if header.width * header.height > max_pixels:
        raise UnusableImage(f"{path}: {header.width}x{header.height} = {header.width * header.height} pixels is above "
                            f"the decompression-bomb limit of {max_pixels}")
    return header


def decode_image_file(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The RGB pixels, or UnusableImage (truncated or corrupt data included)."""
    check_image_file(path, max_pixels)
    try:
        return load_image(path)
    except Exception as err:  # OSError "image file is truncated", decoder errors
        raise UnusableImage(f"{path}: its pixel data does not decode (truncated or corrupt: {err})") from None
