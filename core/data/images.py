"""Reading one image file into an RGB PIL image, or saying exactly why not.

Photos arrive in every mode Pillow knows: palette with transparency, 16-bit greyscale
from scientific cameras, CMYK from print workflows, rotated phone shots with an EXIF
orientation tag.  The network wants upright 8-bit RGB, so everything is normalised here,
once, for training, evaluation and prediction alike.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.errors import ImageReadError

# A file over this many bytes is not a photo we want to decode in a dashboard.
MAX_FILE_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}

# Never decode a truncated file silently into grey: it must be reported.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_ignored(path: Path) -> bool:
    """Hidden files and OS metadata are skipped without a word."""
    return any(part in IGNORED_NAMES or part.startswith(".") or part.startswith("._") for part in path.parts[-1:])


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # convert("L") clips 16-bit values at 255; scale by the real range instead.
        arr = np.asarray(img, dtype=np.float32)
        finite = arr[np.isfinite(arr)]  # float TIFFs may hold NaN/inf: scale by the real values
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
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
    and validity checks.  Raises ``ImageReadError`` with a reason a person can act on,
    and the same reason for the same bytes whether they come as a path or a file object
    (an upload): whatever Pillow or its plugins raise on a hostile file ends up here.
    """
    name = _name_of(source)
    source = _checked_source(source, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "corrupt EXIF", "tag data larger than file": it decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                # The warning filter above is process-wide and threads share it (the scan
                # checks files in a pool): one thread leaving catch_warnings can drop it
                # under another.  The size test itself does not depend on it.
                if Image.MAX_IMAGE_PIXELS and img.width * img.height > Image.MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", _draft_target(img.size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"too many pixels (over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}): "
                             "refused as a decompression bomb", name) from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF)", name) from None
    except MemoryError:  # a header claiming absurd dimensions that slipped under the pixel cap
        raise ImageReadError("damaged image: its header asks for more memory than there is", name) from None
    except EOFError:  # some plugins (GIF, PSD) run out of data this way instead
        raise ImageReadError("truncated or damaged image data", name) from None
    except OSError as e:  # truncated data, broken headers, unreadable files
        # An error from the system (a folder, no permission) names the server path in
        # str(e); its strerror alone says what is wrong.  Pillow's own have no errno.
        msg = e.strerror if e.errno is not None and e.strerror else _first_line(e)
        if "truncated" in msg.lower():
            raise ImageReadError("truncated or damaged image data", name) from None
        raise ImageReadError(f"unreadable: {msg}", name) from None
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise anything on garbage
        # (ValueError, SyntaxError, IndexError, struct.error, ZeroDivisionError, KeyError...):
        # all of it is "this file is damaged", never a reason to crash a page.
        raise ImageReadError(f"damaged image: {_first_line(e)}", name) from None


def _name_of(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    name = getattr(source, "name", None)  # open files and Streamlit uploads have one; BytesIO does not
    return Path(name).name if isinstance(name, str) else ""


def _checked_source(source, name: str):
    """The size checks, for paths and file objects alike; returns what to hand Pillow."""
    if isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
        except OSError as e:
            raise ImageReadError(f"cannot open: {e.strerror or e}", name) from None
    else:
        size = _remaining(source)
        if size is None:  # not seekable (a pipe, a socket): read it, but never more than the cap
            data = source.read(MAX_FILE_BYTES + 1)
            size, source = len(data), io.BytesIO(data)
    if size == 0:
        raise ImageReadError("empty file", name)
    if size > MAX_FILE_BYTES:
        raise ImageReadError(f"too large ({size / 2**20:.0f} MB > {MAX_FILE_BYTES // 2**20} MB)", name)
    return source


def _remaining(f) -> int | None:
    """Bytes from the current position to the end of a seekable file object, else None."""
    try:
        if not f.seekable():
            return None
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return max(0, end - pos)
    except (AttributeError, OSError, ValueError):
        return None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0][:200] if lines else "") or type(e).__name__


def _draft_target(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    w, h = size
    scale = short_side / min(w, h)
    return (max(1, int(w * scale)), max(1, int(h * scale)))
