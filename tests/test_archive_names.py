"""Class names survive the archivers people really use.

Each archive here is written the way its tool writes it: Info-ZIP ``zip -r`` (UTF-8
bytes, no UTF-8 flag), Windows Explorer in Chinese, Russian, Japanese and US locales
(the OEM code page, no flag), macOS Archive Utility (flagged UTF-8 in NFD, with
``__MACOSX/`` and ``._`` files).  The class folders must come out exactly as the user
named them: in ``scan_dataset(...).classes`` and on disk.
"""
import io
import os
import shutil
import subprocess
import unicodedata
import zipfile
import zlib

import pytest
from PIL import Image

from core.data import archive, datasets as data
from core.errors import ArchiveError

IMAGES_PER_CLASS = 4


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (37 * seed % 256, 90, 255 - 37 * seed % 256)).save(buf, "JPEG")
    return buf.getvalue()


class RawName(zipfile.ZipInfo):
    """An entry whose name is written as these exact bytes, without the UTF-8 flag:
    what every archiver that predates (or ignores) the flag does."""

    def __init__(self, raw: bytes, **kw):
        super().__init__(raw.decode("cp437"), **kw)  # what zipfile reads back: cp437
        self.raw = raw

    def _encodeFilenameFlags(self):
        return self.raw, self.flag_bits & ~archive.UTF8_FLAG


def write_zip(path, names: list[str], encoding: str | None, *, dirs=False, system=0, extra=b"", sep="/"):
    """``names`` are folder paths of classes; each gets IMG_0001.jpg... ``encoding`` None
    writes names the modern way (flagged UTF-8 when not ASCII)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        k = 0
        for folder in names:
            entries = ([folder + "/"] if dirs else []) + [f"{folder}/IMG_{i:04d}.jpg" for i in range(1, IMAGES_PER_CLASS + 1)]
            for name in entries:
                name = name.replace("/", sep)
                info = RawName(name.encode(encoding)) if encoding else zipfile.ZipInfo(name)
                info.create_system, info.extra = system, extra
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o40755 << 16 | 0x10) if name.endswith(sep) else 0o644 << 16
                z.writestr(info, b"" if name.endswith(sep) else jpeg(k))
                k += 1
    return path


def classes_of(zip_path):
    ds = data.scan_dataset(zip_path)
    on_disk = sorted(p.name for p in ds.root.iterdir() if p.is_dir())
    assert on_disk == ds.classes, "the extracted folders carry the decoded names"
    assert not ds.skipped
    return ds.classes


def test_zip_r_of_a_t_shirt_folder_with_the_real_info_zip(tmp_path, isolated_dirs):
    zip_bin = shutil.which("zip")
    if zip_bin is None:
        pytest.skip("Info-ZIP's zip is not installed (the hand-made twin below always runs)")
    src = tmp_path / "clothes"
    for c, cls in enumerate(["T恤 t-shirt", "连衣裙", "пчела"]):
        (src / cls).mkdir(parents=True)
        for i in range(1, IMAGES_PER_CLASS + 1):
            (src / cls / f"IMG_{i:04d}.jpg").write_bytes(jpeg(c * 10 + i))
    out = tmp_path / "clothes.zip"
    env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    subprocess.run([zip_bin, "-r", "-q", str(out), "clothes"], cwd=tmp_path, env=env, check=True)
    with zipfile.ZipFile(out) as z:  # the premise: no flag, so zipfile alone reads mojibake
        assert not any(i.flag_bits & archive.UTF8_FLAG for i in z.infolist())
        assert any(n.startswith("clothes/Tµüñ t-shirt") for n in z.namelist())
    assert classes_of(out) == ["T恤 t-shirt", "пчела", "连衣裙"]


def test_zip_r_hand_made_twin(tmp_path, isolated_dirs):
    names = ["dataset/T恤 t-shirt", "dataset/пчела", "dataset/蚂蚁", "dataset/表示"]
    ux = b"ux\x0b\x00\x01\x04\xe8\x03\x00\x00\x04\xe8\x03\x00\x00"  # Info-ZIP's Unix uid/gid field
    z = write_zip(tmp_path / "dataset.zip", names, "utf-8", dirs=True, system=3, extra=ux)
    assert classes_of(z) == ["T恤 t-shirt", "пчела", "蚂蚁", "表示"]


def test_windows_explorer_chinese_gbk(tmp_path, isolated_dirs):
    z = write_zip(tmp_path / "昆虫.zip", ["昆虫/蚂蚁", "昆虫/蜜蜂", "昆虫/T恤 t-shirt"], "gbk")
    assert classes_of(z) == ["T恤 t-shirt", "蚂蚁", "蜜蜂"]


def test_windows_explorer_russian_cp866(tmp_path, isolated_dirs):
    z = write_zip(tmp_path / "насекомые.zip", ["пчела", "муравей", "Бабочка"], "cp866")
    assert classes_of(z) == ["Бабочка", "муравей", "пчела"]


def test_windows_explorer_japanese_cp932_with_a_backslash_byte(tmp_path, isolated_dirs):
    assert "表".encode("cp932")[1:] == b"\\" and "ソ".encode("cp932")[1:] == b"\\"
    z = write_zip(tmp_path / "写真.zip", ["表示", "ソフト", "犬"], "cp932")
    assert classes_of(z) == ["ソフト", "犬", "表示"]  # not split at the 0x5C inside 表 and ソ
    # Read as cp437, the folder "表.." would look like "ò\\..": a false traversal alarm.
    ok = write_zip(tmp_path / "dots.zip", ["表..", "犬"], "cp932")
    assert classes_of(ok) == ["犬", "表.."]


def test_windows_explorer_us_cp437(tmp_path, isolated_dirs):
    z = write_zip(tmp_path / "food.zip", ["café", "crème brûlée", "niño"], "cp437")
    assert classes_of(z) == ["café", "crème brûlée", "niño"]


def test_powershell_backslash_separators(tmp_path, isolated_dirs):
    z = write_zip(tmp_path / "ps.zip", ["pets\\cat", "pets\\dog"], None, sep="\\")
    assert classes_of(z) == ["cat", "dog"]


def test_macos_archive_utility_nfd_and_metadata(tmp_path, isolated_dirs):
    classes = ["café", "Ёж", "蚂蚁"]
    nfd = [unicodedata.normalize("NFD", f"photos/{c}") for c in classes]
    assert nfd[0] != f"photos/{classes[0]}"  # the premise: macOS decomposes é and Ё
    z = write_zip(tmp_path / "photos.zip", nfd, None, dirs=True, system=3)
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("__MACOSX/photos/._café", b"\0\5\26\7 AppleDouble")
        zf.writestr(unicodedata.normalize("NFD", "photos/café/._IMG_0001.jpg"), b"\0\5\26\7")
        zf.writestr("photos/.DS_Store", b"\0\0\0\1Bud1")
    assert classes_of(z) == sorted(classes)
    ds = data.scan_dataset(z)
    assert not list(ds.root.parent.rglob("._*")) and not list(ds.root.parent.rglob("__MACOSX"))


def test_unicode_path_extra_field_is_used_when_its_crc_matches(tmp_path, isolated_dirs):
    def field(name: str, stored: bytes) -> bytes:
        body = b"\x01" + zlib.crc32(stored).to_bytes(4, "little") + name.encode("utf-8")
        return (0x7075).to_bytes(2, "little") + len(body).to_bytes(2, "little") + body
    path = tmp_path / "up.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for cls, stale in (("蜜蜂", False), ("пчела", True)):
            for i in range(1, IMAGES_PER_CLASS + 1):
                stored = f"{cls}/IMG_{i:04d}.jpg".encode("gbk" if not stale else "cp866")
                info = RawName(stored)
                # A stale field (its CRC is of another name) must be ignored.
                info.extra = field(f"{cls}/IMG_{i:04d}.jpg", stored if not stale else b"renamed")
                zf.writestr(info, jpeg(i))
    assert archive.decode_names(zipfile.ZipFile(path).infolist())[0] == "蜜蜂/IMG_0001.jpg"
    assert set(classes_of(path)) == {"蜜蜂", "пчела"}


def test_traversal_and_links_are_checked_on_decoded_names(tmp_path):
    for i, bad in enumerate(["..\\蚂蚁.jpg", "蚂蚁/../../evil.jpg", "/蚂蚁/evil.jpg", "C:\\蚂蚁\\evil.jpg"]):
        path = write_zip(tmp_path / f"bad{i}.zip", ["蚂蚁"], "gbk")
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(RawName(bad.encode("gbk")), b"evil")
        with pytest.raises(ArchiveError, match="outside the target") as e:
            archive.extract_zip(path, tmp_path / f"out{i}")
        assert "蚂蚁" in str(e.value)  # the decoded name, as the user wrote it
        assert not (tmp_path / f"out{i}").exists() and not (tmp_path / "evil.jpg").exists()
    link = write_zip(tmp_path / "link.zip", ["表示"], "cp932")
    with zipfile.ZipFile(link, "a") as zf:
        info = RawName("表示/リンク".encode("cp932"))
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="'表示/リンク' is a symbolic link"):
        archive.extract_zip(link, tmp_path / "out-link")


def test_messages_name_the_users_file_not_the_servers_copy(tmp_path, isolated_dirs):
    saved = tmp_path / "uploads" / "3f2a9c" / "upload-3f2a9c.zip"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ArchiveError) as e:
        data.resolve_source(saved, display_name="我的照片.zip")
    assert str(e.value).startswith("我的照片.zip is not a readable zip archive") and str(tmp_path) not in str(e.value)
    with pytest.raises(ArchiveError) as e:
        archive.extract_zip(saved, tmp_path / "t")
    assert str(e.value).startswith("upload-3f2a9c.zip ") and str(tmp_path) not in str(e.value)


def test_ascii_names_and_plain_utf8_are_left_alone(tmp_path):
    infos = [RawName(b"pets/cat/IMG_0001.jpg"), RawName("pets/狗/IMG_0002.jpg".encode("utf-8"))]
    assert archive.decode_names(infos) == ["pets/cat/IMG_0001.jpg", "pets/狗/IMG_0002.jpg"]
    assert archive.guess_encoding([]) == "utf-8"
