"""Limits on the images the slicing code accepts (no imports: components.config reads them at import time)."""

MAX_PIXELS = 89_478_485  # decompression-bomb limit: PIL's default MAX_IMAGE_PIXELS, params `validate.max_pixels`
