"""Seeded fuzz of the archive boundary: ``extract_zip`` and ``resolve_source``.

Every hostile archive gives an extracted folder or an ``ArchiveError`` naming the
user's file (the display name of an upload, never the server's path), and leaves
nothing behind: no target folder, no temporary ``.extract-*`` folder.  Source: a real
small zip of ants/bees photos (the smallest files of the tutorial set, a GIF among them).
"""
import io
import zipfile

import pytest

from core.data import archive, datasets as data
from core.errors import ArchiveError, DatasetError
from tests.conftest import ANTS_BEES
from tests.test_fuzz_kit import FOREIGN, Tally, cut_offsets, flipped, random_blobs, report_at_end

TALLY = Tally("archives: extract_zip")
SHOWN = "my photos.zip"  # what the user called the file they uploaded

_report = report_at_end(TALLY)


@pytest.fixture(scope="module")
def photos_zip() -> bytes:
    if ANTS_BEES is None:
        pytest.skip("../shared/datasets/hymenoptera_data is absent (the real photos live there)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for cls in ("ants", "bees"):
            for f in sorted((ANTS_BEES / "train" / cls).iterdir(), key=lambda f: f.stat().st_size)[:3]:
                z.write(f, f"hymenoptera/{cls}/{f.name}")
    return buf.getvalue()


def attempt(tmp_path, blob: bytes, case: str, expect_error: bool = False, **kw) -> str:
    """Extract ``blob`` saved under a server-side name; returns the error ('' if it extracted)."""
    upload = tmp_path / "uploads" / "5e1f0c2a"
    upload.mkdir(parents=True, exist_ok=True)
    src = upload / f"upload-{len(list(upload.iterdir()))}.zip"
    src.write_bytes(blob)
    out = tmp_path / "extracted"
    target = out / src.stem
    try:
        root = archive.extract_zip(src, target, display_name=SHOWN, **kw)
    except ArchiveError as e:
        msg = str(e)
        assert SHOWN in msg and str(tmp_path) not in msg and src.name not in msg and "\n" not in msg, msg
        assert not target.exists() and not list(out.glob(".extract-*")), "nothing half-extracted is left"
        TALLY.add(case, f"ArchiveError: {msg.replace(SHOWN, '<file>')}")
        return msg
    assert not expect_error, case
    assert root.is_dir() and (root == target or target in root.parents)
    TALLY.add(case, "extracts")
    return ""


def test_random_bytes_and_other_kinds_of_file(tmp_path, photos_zip):
    for seed in (1, 2):
        for label, blob in random_blobs(seed):
            assert "not a readable zip archive" in attempt(tmp_path, blob, "random bytes", expect_error=True)
    for kind, blob in FOREIGN.items():
        attempt(tmp_path, blob, "another kind of file", expect_error=True)
    attempt(tmp_path, photos_zip[:30] + b"\0" * 100, "another kind of file", expect_error=True)


def test_cut_short_at_many_offsets(tmp_path, photos_zip):
    for cut in cut_offsets(len(photos_zip), 40, 7):
        attempt(tmp_path, photos_zip[:cut], "truncated zip", expect_error=True)


def test_flipped_bytes_in_entries_and_in_the_central_directory(tmp_path, photos_zip):
    cd = photos_zip.index(b"PK\x01\x02")
    for seed in range(25):
        attempt(tmp_path, flipped(photos_zip, seed, 0, cd), "flip in local headers or data")
        attempt(tmp_path, flipped(photos_zip, seed, cd, len(photos_zip)), "flip in central directory")


def _patch_headers(blob: bytes, **fields) -> bytes:
    """Set a field in every local and central header: flags, method or size."""
    local = {"flags": (6, 2), "method": (8, 2), "size": (22, 4)}
    central = {"flags": (8, 2), "method": (10, 2), "size": (24, 4)}
    b = bytearray(blob)
    for sig, layout in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = b.find(sig)
        while at >= 0:
            for field, value in fields.items():
                off, n = layout[field]
                b[at + off:at + off + n] = (value | int.from_bytes(b[at + off:at + off + n], "little")
                                            if field == "flags" else value).to_bytes(n, "little")
            at = b.find(sig, at + 4)
    return bytes(b)


def test_what_zipfile_cannot_read_is_named_before_anything_is_written(tmp_path, photos_zip):
    msg = attempt(tmp_path, _patch_headers(photos_zip, flags=0x1), "encrypted entries", True)
    assert "is password-protected" in msg
    msg = attempt(tmp_path, _patch_headers(photos_zip, method=9), "Deflate64 (Windows, large files)", True)
    assert "uses Deflate64 compression" in msg
    msg = attempt(tmp_path, _patch_headers(photos_zip, method=93), "Zstandard", True)
    assert "uses Zstandard compression" in msg
    msg = attempt(tmp_path, _patch_headers(photos_zip, size=0x7FFFFFFF), "sizes claiming 2 GiB each", True)
    assert msg.startswith(f"refused {SHOWN}: it unpacks to")
    bad_utf8 = _patch_headers(photos_zip, flags=archive.UTF8_FLAG).replace(b"hymenoptera/bees", b"hymenoptera/\xffees")
    assert "not a readable zip archive" in attempt(tmp_path, bad_utf8, "flagged UTF-8 name that is not", True)


class StoredName(zipfile.ZipInfo):
    """An entry stored under exactly ``raw`` (even an empty name, which zipfile refuses to write)."""

    def __init__(self, raw: bytes):
        super().__init__(f"placeholder-{raw!r}")
        self.raw = raw

    def _encodeFilenameFlags(self):
        return self.raw, self.flag_bits


def _zip(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in entries.items():
            z.writestr(StoredName(name.encode()) if len(name) < 3 else name, content)
    return buf.getvalue()


def test_entries_the_disk_cannot_take(tmp_path):
    msg = attempt(tmp_path, _zip({"a": b"file", "a/b.jpg": b"x"}), "a file where a folder goes", True)
    assert "could not be extracted: entry 'a/b.jpg'" in msg
    msg = attempt(tmp_path, _zip({"x" * 300 + "/a.jpg": b"x"}), "a name too long for the disk", True)
    assert "File name too long" in msg
    attempt(tmp_path, _zip({"": b"x", "./": b"", "ok/a.jpg": b"x"}), "empty and dot names")
    for bad in ("../x.jpg", "/etc/x.jpg", "C:\\x.jpg", "a\\..\\..\\x.jpg"):
        assert "outside the target folder" in attempt(tmp_path, _zip({bad: b"x"}), "path traversal", True)


def test_through_resolve_source_and_scan_dataset(tmp_path, isolated_dirs, photos_zip):
    saved = tmp_path / "uploads" / "abc123" / "upload.zip"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(photos_zip[: len(photos_zip) // 2])
    with pytest.raises(ArchiveError) as e:
        data.resolve_source(saved, display_name=SHOWN)
    assert str(e.value).startswith(f"{SHOWN} is not a readable zip archive")
    saved.write_bytes(photos_zip)
    ds = data.scan_dataset(saved)
    assert ds.classes == ["ants", "bees"] and len(ds.train) + len(ds.val) + len(ds.skipped) == 6
    TALLY.add("the real zip, whole (scan_dataset)", "extracts")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(DatasetError, match="^notes.txt is a file but not a .zip"):
        data.resolve_source(text)
