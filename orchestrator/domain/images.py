"""Recognising images from their bytes (never from a file name or a declared type), and decoding
them before they are accepted.

    sniff_image_type(data)  the type the magic bytes claim, or None (not an image we take)
    check_image(data)       that type, once Pillow has verified the file's structure and decoded its
                            pixels in full; else ValidationError saying what is wrong

A PNG header followed by garbage passes the sniff but not the decode. The pixel count is checked
from the header before any pixel is decoded, so a small file that would expand to gigabytes (a
decompression bomb) is refused without the memory being spent.
"""

from __future__ import annotations

import io

from PIL import Image

from orchestrator.errors import ValidationError

MAX_PIXELS = 40_000_000  # about 6,300 x 6,300: far beyond what a vision model takes
PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


def sniff_image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(data: bytes, media_type: str) -> None:
    """Raise ValidationError unless `data` decodes as a `media_type` image of at most MAX_PIXELS."""
    pillow_format = PILLOW_FORMATS[media_type]
    try:
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            image.verify()  # structure and checksums, without decoding pixels
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValidationError(f"the image is {width} x {height} pixels; at most {MAX_PIXELS:,} pixels "
                                      "are accepted: scale it down", details={"width": width, "height": height})
            image.load()
    except ValidationError:
        raise
    except Image.DecompressionBombError:
        raise ValidationError(f"the image has far more than {MAX_PIXELS:,} pixels; scale it down",
                              details={"media_type": media_type}) from None
    except Exception as error:  # a decoder refusing hostile bytes may raise almost anything: all mean "not valid"
        raise ValidationError(f"the upload looks like {media_type} but does not decode as one "
                              f"({type(error).__name__}); send an undamaged image",
                              details={"media_type": media_type}) from None
