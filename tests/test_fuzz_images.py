"""Seeded fuzz of the image boundary: ``load_rgb`` on paths and on file objects.

Every case gives an RGB image or an ``ImageReadError`` (its text the reason, its
``name`` the file); nothing else may escape.  The same bytes get the same outcome and
the same reason whether they come as a path (the Data page) or as a file object (an
upload on the Predict page).  Sources: real ants/bees photos, re-encoded as PNG, GIF,
WebP, TIFF and BMP, plus odd but valid images that must load.
"""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.errors import ImageReadError, TransferLabError
from core.data.images import load_rgb
from tests.conftest import ANTS_BEES
from tests.test_fuzz_kit import FOREIGN, Tally, cut_offsets, flipped, random_blobs, report_at_end

TALLY = Tally("images: load_rgb")

_report = report_at_end(TALLY)


def _outcome(source):
    try:
        img = load_rgb(source)
    except ImageReadError as e:
        assert isinstance(e, TransferLabError) and "\n" not in e.reason
        return ("error", e.reason, e.name)
    assert img.mode == "RGB" and min(img.size) >= 1
    return ("ok", img.size, "")


def attempt(path, case: str, expect_error: bool = False):
    """Load ``path`` as a path and as an upload; both must agree.  Returns the outcome."""
    by_path = _outcome(path)
    by_upload = _outcome(io.BytesIO(path.read_bytes()))
    assert by_path[:2] == by_upload[:2], (case, path.name, by_path, by_upload)
    if by_path[0] == "error":
        assert by_path[2] == path.name and by_upload[2] == ""
        TALLY.add(case, f"ImageReadError: {by_path[1]}")
    else:
        assert not expect_error, (case, path.name)
        TALLY.add(case, "loads as RGB")
    return by_path


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    if ANTS_BEES is None:
        pytest.skip("../shared/datasets/hymenoptera_data is absent (the real photos live there)")
    ant = sorted((ANTS_BEES / "train" / "ants").iterdir())[0]
    bee = sorted((ANTS_BEES / "val" / "bees").iterdir())[0]
    with Image.open(bee) as im:
        small = im.convert("RGB").resize((96, 72))
    return {"ant.jpg": ant.read_bytes(), "bee.jpg": bee.read_bytes(), "bee.png": encoded(small, "PNG"),
            "bee.gif": encoded(small, "GIF"), "bee.webp": encoded(small, "WEBP"), "bee.tif": encoded(small, "TIFF"),
            "bee.bmp": encoded(small, "BMP")}


def put(path, data: bytes):
    path.write_bytes(data)
    return path


def test_random_bytes_and_empty_files(tmp_path):
    for suffix in (".jpg", ".png", ".webp"):
        for seed in (1, 2):
            for label, blob in random_blobs(seed):
                result = attempt(put(tmp_path / f"{label}-{seed}{suffix}", blob), "random bytes")
                if not blob:
                    assert result[1] == "empty file"  # on the Data page and the Predict page alike


def test_other_kinds_of_file_under_image_names(tmp_path, photos):
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    others = {**FOREIGN, "checkpoint": buf.getvalue()}
    for kind, blob in others.items():
        for suffix in (".jpg", ".png"):
            reason = attempt(put(tmp_path / f"{kind}{suffix}", blob), "another kind of file", expect_error=True)[1]
            assert reason == "not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF)"


def test_cut_short_at_many_offsets(tmp_path, photos):
    for seed, (name, blob) in enumerate(sorted(photos.items())):
        for cut in cut_offsets(len(blob), 20, seed):
            result = attempt(put(tmp_path / f"cut{cut}-{name}", blob[:cut]), f"truncated {name.split('.')[1]}")
            if name.endswith(".jpg") and cut > 1000:
                assert result[1] == "truncated or damaged image data"


def test_flipped_bytes_in_headers_and_in_pixel_data(tmp_path, photos):
    for name, blob in sorted(photos.items()):
        for seed in range(12):
            attempt(put(tmp_path / f"h{seed}-{name}", flipped(blob, seed, 0, 64)), "flip in header")
            attempt(put(tmp_path / f"d{seed}-{name}", flipped(blob, seed, len(blob) // 3, len(blob), n=4)), "flip in data")


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (with a correct CRC) claims another size."""
    png = bytearray(encoded(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(png)


def _odd_but_valid(photo: bytes) -> dict[str, tuple[bytes, tuple[int, int]]]:
    with Image.open(io.BytesIO(photo)) as im:
        rgb = im.convert("RGB").resize((60, 40))
    deep = Image.fromarray(np.linspace(0, 65535, 60 * 40).reshape(40, 60).astype(np.uint16))
    floats = np.linspace(-1, 1, 60 * 40, dtype=np.float32).reshape(40, 60)
    floats[0, :5] = [np.nan, np.inf, -np.inf, np.nan, 0]
    frames = [rgb, rgb.rotate(90), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "16-bit.png": (encoded(deep, "PNG"), (60, 40)),
        "16-bit.tif": (encoded(deep, "TIFF"), (60, 40)),
        "float-with-nan.tif": (encoded(Image.fromarray(floats, "F"), "TIFF"), (60, 40)),
        "la.png": (encoded(rgb.convert("LA"), "PNG"), (60, 40)),
        "cmyk.jpg": (encoded(rgb.convert("CMYK"), "JPEG"), (60, 40)),
        "grey.jpg": (encoded(rgb.convert("L"), "JPEG"), (60, 40)),
        "bilevel.png": (encoded(rgb.convert("1"), "PNG"), (60, 40)),
        "palette-transparent.png": (encoded(pal, "PNG", transparency=0), (60, 40)),
        "animated.gif": (encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0), (60, 40)),
        "3x2.png": (encoded(rgb.resize((3, 2)), "PNG"), (3, 2)),
        "4000x50.jpg": (encoded(rgb.resize((4000, 50)), "JPEG"), (4000, 50)),
        "lossy.webp": (encoded(rgb, "WEBP", quality=60), (60, 40)),
        "alpha.webp": (encoded(rgb.convert("RGBA"), "WEBP", lossless=True), (60, 40)),
        "rgb.tif": (encoded(rgb, "TIFF", compression="tiff_lzw"), (60, 40)),
        "rgb.bmp": (encoded(rgb, "BMP"), (60, 40)),
        "rgb.ppm": (encoded(rgb, "PPM"), (60, 40)),
        "progressive.jpg": (encoded(rgb, "JPEG", progressive=True), (60, 40)),
        "rotated-exif.jpg": (encoded(rgb, "JPEG", exif=exif), (40, 60)),
    }


def test_odd_but_valid_images_load_upright_and_rgb(tmp_path, photos):
    for name, (blob, size) in _odd_but_valid(photos["bee.jpg"]).items():
        assert attempt(put(tmp_path / name, blob), "odd but valid image") == ("ok", size, "")


def test_decompression_bombs_are_refused(tmp_path):
    for w, h in ((100_000, 100_000), (2**31 - 1, 1), (1, 2**31 - 1)):
        reason = attempt(put(tmp_path / f"bomb-{w}x{h}.png", _png_claiming(w, h)), "decompression bomb header", True)[1]
        assert "refused as a decompression bomb" in reason or "damaged" in reason or "unreadable" in reason


class Pipe:
    """A file object that cannot seek (a socket, a pipe)."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)

    def read(self, n=-1):
        return self._f.read(n)

    def seekable(self):
        return False


def test_size_checks_are_the_same_for_paths_uploads_and_pipes(tmp_path, photos, monkeypatch):
    big = put(tmp_path / "big.jpg", photos["ant.jpg"])
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 10_000)
    reasons = set()
    for source in (big, io.BytesIO(big.read_bytes()), Pipe(big.read_bytes()), open(big, "rb")):
        with pytest.raises(ImageReadError) as e:
            load_rgb(source)
        reasons.add(str(e.value))
        TALLY.add("over the size cap (path, upload, pipe, open file)", f"ImageReadError: {e.value}")
    assert len(reasons) == 1 and reasons.pop().startswith("too large")
    monkeypatch.undo()
    for source in (put(tmp_path / "empty.jpg", b""), io.BytesIO(b""), Pipe(b"")):
        with pytest.raises(ImageReadError, match="^empty file$"):
            load_rgb(source)
        TALLY.add("empty (path, upload, pipe)", "ImageReadError: empty file")
    with open(put(tmp_path / "named.jpg", b"GIF89a junk"), "rb") as f:
        with pytest.raises(ImageReadError) as e:
            load_rgb(f)
    assert e.value.name == "named.jpg"  # an open file is named by its own name
    with pytest.raises(ImageReadError, match="cannot open") as e:
        load_rgb(tmp_path / "missing.jpg")
    assert e.value.name == "missing.jpg"
