"""Read photos safely as RGB (paper §2.3 input): EXIF orientation, odd modes, refusal of bad or huge files.

PIL only, no torch: every command that reads a photo goes through `load_image`, and a broken file becomes one
`ImageError` / `BadInput` sentence that names it.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import IO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from face0cli.config import CropConfig
from face0cli.errors import BadInput, ImageError, one_line

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_READ_CHUNK = 1 << 20


def load_image(
    path: str | os.PathLike[str] | IO[bytes],
    *,
    max_pixels: int = CropConfig.max_pixels,
    name: str | None = None,
) -> Image.Image:
    """Decode a photo as an upright 8-bit RGB image, the detector's input (paper §2.3).

    The pixel count declared in the header is checked before any pixel is decoded (decompression bombs);
    EXIF orientation is applied; greyscale, palette, alpha (composited on white), CMYK and 16-bit greyscale
    (scaled, not clipped, to 8 bits) all become RGB.

    Args:
        path: a file path, or a readable binary file object (e.g. a tar member's bytes in ``io.BytesIO``).
        max_pixels: refuse images whose width * height exceeds this.
        name: how to name the file in error messages (default: the path, or the file object's ``name``).

    Returns:
        An RGB ``PIL.Image.Image`` of size (W, H), fully loaded.

    Raises:
        BadInput: the path does not exist, is a directory or cannot be read.
        ImageError: the file is empty, not an image, truncated or corrupt, or has more than max_pixels pixels.
    """
    if not isinstance(path, (str, os.PathLike)):
        label = name or str(getattr(path, "name", "<bytes>"))
        if _remaining_bytes(path) == 0:
            raise ImageError(f"{label} is empty (0 bytes), not an image.")
        return _to_rgb(_open_checked(path, label, max_pixels), label)
    p, label = Path(path), name or str(path)
    if not p.exists():
        raise BadInput(f"{label} does not exist.")
    if p.is_dir():
        raise BadInput(f"{label} is a directory, not an image.")
    try:
        if p.stat().st_size == 0:
            raise ImageError(f"{label} is empty (0 bytes), not an image.")
        with open(p, "rb") as f:
            image = _open_checked(f, label, max_pixels)
    except OSError as e:
        raise BadInput(f"cannot read {label} ({e.strerror or e}).") from e
    return _to_rgb(image, label)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes as 64 hex digits (provenance of an embedded photo, weights ids).

    Args:
        path: the file.

    Raises:
        BadInput: the file does not exist or cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_READ_CHUNK), b""):
                digest.update(chunk)
    except OSError as e:
        raise BadInput(f"cannot read {path} ({e.strerror or e}).") from e
    return digest.hexdigest()


def _remaining_bytes(fp: IO[bytes]) -> int | None:
    """Bytes from the current position to the end, or None when the stream cannot seek."""
    try:
        pos = fp.tell()
        end = fp.seek(0, io.SEEK_END)
        fp.seek(pos)
    except (OSError, AttributeError, ValueError):
        return None
    return end - pos


def _open_checked(fp: IO[bytes], label: str, max_pixels: int) -> Image.Image:
    """Open, check the declared size against max_pixels, then decode every pixel (truncation fails here)."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    # PIL's own bomb warning is an error unless the caller allows more pixels than PIL does.
    lifted = pil_limit is not None and max_pixels > pil_limit
    bomb_action: Literal["error", "ignore"] = "ignore" if lifted else "error"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(bomb_action, Image.DecompressionBombWarning)
            image = Image.open(fp)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{label} declares {width}x{height} = {width * height:,} pixels, more than the limit of "
                    f"{max_pixels:,}; it is refused without decoding."
                )
            image.load()  # decodes every pixel: with LOAD_TRUNCATED_IMAGES False, truncation fails here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{label} is refused as a possible decompression bomb: {one_line(e)}.") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{label} is not an image that can be read (unknown or corrupt format).") from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageError(f"{label} cannot be decoded; it is truncated or corrupt ({one_line(e)}).") from e
    return image


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    """Apply EXIF orientation, then turn any mode into 8-bit RGB (alpha composited on white)."""
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as e:
        raise ImageError(f"{label} has EXIF orientation data that cannot be applied ({one_line(e)}).") from e
    mode = image.mode
    if mode in _WIDE_GREY_MODES:
        return _wide_grey_to_l(image).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(f"{label} has pixel mode {mode}, which cannot be turned into RGB ({one_line(e)}).") from e


def _wide_grey_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit / float greyscale to 8 bits by value (PIL's convert("L") would clip at 255).

    16-bit and non-negative integers up to 65535 map 65535 -> 255; floats within [0, 1] map 1 -> 255; any
    other range is stretched from its minimum to its maximum.
    """
    a = np.asarray(image).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if image.mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif image.mode != "F" and lo >= 0.0 and hi <= 65535.0:
        scaled = a / 257.0
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
