"""Scanning folders and zips: odd images converted, damaged ones skipped with reasons,
unsafe archives refused before anything is written."""
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data import archive, datasets as data
from core.errors import ArchiveError, DatasetError
from core.data.images import ImageReadError, load_rgb
from tests.conftest import write_image


def test_every_mode_becomes_rgb(tmp_path):
    modes = {"L": "PNG", "RGBA": "PNG", "CMYK": "JPEG", "LA": "PNG", "I;16": "PNG"}
    for mode, fmt in modes.items():
        f = tmp_path / f"x_{mode.replace(';', '')}.{fmt.lower()}"
        write_image(f, (120, 60, 30), fmt=fmt, mode=mode)
        img = load_rgb(f)
        assert img.mode == "RGB" and img.size == (64, 48)
    # palette with transparency: transparent pixels become white, not black
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    p.save(tmp_path / "pal.png", transparency=0)
    assert load_rgb(tmp_path / "pal.png").getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert out[..., 0].max() == 255 and 100 < out[..., 0].mean() < 155


def test_exif_orientation_is_respected(tmp_path):
    img = Image.new("RGB", (60, 30), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert load_rgb(tmp_path / "phone.jpg").size == (30, 60)


def test_damaged_files_are_skipped_with_reasons(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    for i in range(3):
        write_image(root / "cats" / f"c{i}.jpg", (200, 10, 10))
        write_image(root / "dogs" / f"d{i}.jpg", (10, 10, 200))
    good = (root / "cats" / "c0.jpg").read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "fake.jpg").write_text("hello, not an image")
    (root / "dogs" / "notes.txt").write_text("readme")
    (root / "dogs" / ".DS_Store").write_bytes(b"\0\1")
    (root / "dogs" / "Thumbs.db").write_bytes(b"\0\1")
    write_image(root / "dogs" / "huge.png", (1, 2, 3), size=(300, 300), fmt="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 300x300 is now a "bomb"
    ds = data.scan_dataset(root, val_split=0.34, seed=1)
    reasons = {p.split("/")[-1]: r for p, r in ds.skipped}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "fake.jpg", "notes.txt", "huge.png"}
    assert "truncated" in reasons["truncated.jpg"]
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image" in reasons["fake.jpg"] and "not an image" in reasons["notes.txt"]
    assert "decompression bomb" in reasons["huge.png"]
    assert len(ds.train) + len(ds.val) == 6


def test_stratified_seeded_split_and_unicode_classes(tmp_path):
    root = tmp_path / "uni"
    for i in range(10):
        write_image(root / "蚂蚁" / f"{i}.jpg", (200, 0, 0))
        write_image(root / "ankle boot" / f"{i}.jpg", (0, 0, 200))
    a = data.scan_dataset(root, val_split=0.2, seed=3)
    b = data.scan_dataset(root, val_split=0.2, seed=3)
    c = data.scan_dataset(root, val_split=0.2, seed=4)
    assert a.classes == ["ankle boot", "蚂蚁"]
    assert a.counts() == {"train": {"ankle boot": 8, "蚂蚁": 8}, "val": {"ankle boot": 2, "蚂蚁": 2}}
    assert a.val == b.val and a.val != c.val
    assert a.layout == "folders"


def test_train_val_layout(tiny_split):
    ds = data.scan_dataset(tiny_split)
    assert ds.layout == "split" and ds.classes == ["blue", "red"]
    assert ds.counts() == {"train": {"blue": 8, "red": 8}, "val": {"blue": 4, "red": 4}}


def test_clear_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        data.scan_dataset(tmp_path / "missing")
    one = tmp_path / "one"
    write_image(one / "only" / "a.jpg", (1, 1, 1))
    with pytest.raises(DatasetError, match="at least 2 class folders"):
        data.scan_dataset(one)
    two = tmp_path / "two"
    write_image(two / "good" / "a.jpg", (1, 1, 1))
    write_image(two / "good" / "b.jpg", (1, 1, 1))
    (two / "bad").mkdir()
    (two / "bad" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"two/bad has no usable image"):
        data.scan_dataset(two)


def _zip(path, entries: dict, symlink: str | None = None):
    with zipfile.ZipFile(path, "w") as z:
        for name, content in entries.items():
            z.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return path


def _jpeg_bytes(color):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "JPEG")
    return buf.getvalue()


def test_zip_with_wrapper_folder_and_macosx(tmp_path, monkeypatch):
    monkeypatch.setattr(data.paths, "DEFAULT_DATA_DIR", tmp_path / "data")
    entries = {f"pets/{c}/{i}.jpg": _jpeg_bytes(col) for c, col in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))) for i in range(4)}
    entries["__MACOSX/pets/._cat"] = b"junk"
    z = _zip(tmp_path / "pets.zip", entries)
    ds = data.scan_dataset(z)
    assert ds.classes == ["cat", "dog"] and ds.root.name == "pets" and not ds.skipped
    assert data.scan_dataset(z).root == ds.root  # extracted once, reused


@pytest.mark.parametrize("bad", ["../evil.jpg", "/abs/evil.jpg", "ok/../../evil.jpg"])
def test_zip_path_traversal_refused_nothing_written(tmp_path, bad):
    z = _zip(tmp_path / "bad.zip", {"a/x.jpg": _jpeg_bytes((1, 1, 1)), bad: b"evil"})
    target = tmp_path / "out" / "t"
    with pytest.raises(ArchiveError, match="outside the target"):
        archive.extract_zip(z, target)
    assert not target.exists() and not (tmp_path / "evil.jpg").exists()
    assert not any((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else True


def test_zip_symlink_size_cap_and_damage(tmp_path):
    z = _zip(tmp_path / "link.zip", {"a/x.jpg": b"1"}, symlink="a/link")
    with pytest.raises(ArchiveError, match="symbolic link"):
        archive.extract_zip(z, tmp_path / "o1")
    big = _zip(tmp_path / "big.zip", {"a/x.bin": b"\0" * 200_000})
    with pytest.raises(ArchiveError, match="over the cap"):
        archive.extract_zip(big, tmp_path / "o2", max_bytes=100_000)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\3\4 this is not really a zip")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        archive.extract_zip(damaged, tmp_path / "o3")
    with pytest.raises(DatasetError, match="not a .zip"):
        txt = tmp_path / "data.txt"
        txt.write_text("x")
        data.resolve_source(txt)


def test_read_error_is_its_own_type(tmp_path):
    f = tmp_path / "x.jpg"
    f.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageReadError):
        load_rgb(f)
