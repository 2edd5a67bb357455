"""Reading one image file into an RGB PIL image, or saying exactly why not.

Photos arrive in every mode Pillow knows: palette with transparency, 16-bit greyscale
from scientific cameras, CMYK from print workflows, rotated phone shots with an EXIF
orientation tag.  The network wants upright 8-bit RGB, so everything is normalised here,
once, for training, evaluation and prediction alike.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A file over this many bytes is not a photo we want to decode in a dashboard.
MAX_FILE_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}

# Never decode a truncated file silently into grey: it must be reported.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageReadError(Exception):
    """One file could not be used; the message is the reason shown to the user."""


def is_ignored(path: Path) -> bool:
    """Hidden files and OS metadata are skipped without a word."""
    return any(part in IGNORED_NAMES or part.startswith(".") or part.startswith("._") for part in path.parts[-1:])


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # convert("L") clips 16-bit values at 255; scale by the real range instead.
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(source, draft_size: int | None = None) -> Image.Image:
    """Open ``source`` (a path or a binary file object) as an upright RGB image.

    ``draft_size`` lets JPEG decode at a reduced scale (a power of two of the DCT) while
    keeping the shorter side at least that large: a large speed-up for pre-sizing caches
    and validity checks.  Raises ``ImageReadError`` with a reason a person can act on.
    """
    if isinstance(source, (str, os.PathLike)):
        size = os.path.getsize(source)
        if size == 0:
            raise ImageReadError("empty file")
        if size > MAX_FILE_BYTES:
            raise ImageReadError(f"too large ({size / 2**20:.0f} MB > {MAX_FILE_BYTES // 2**20} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", _draft_target(img.size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"too many pixels (over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}): refused as a decompression bomb") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image (Pillow cannot identify it)") from None
    except OSError as e:  # truncated data, broken headers, unreadable files
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageReadError("truncated or damaged image data") from None
        raise ImageReadError(f"unreadable: {msg}") from None
    except (ValueError, SyntaxError, IndexError, TypeError) as e:  # Pillow plugins raise these on garbage
        raise ImageReadError(f"damaged image: {e}") from None


def _draft_target(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    w, h = size
    scale = short_side / min(w, h)
    return (max(1, int(w * scale)), max(1, int(h * scale)))
