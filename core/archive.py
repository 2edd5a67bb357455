"""Safe import of a dataset packed as a .zip.

Every entry is checked before a single byte is written: no absolute paths, no ``..``,
no symlinks, and a cap on the total uncompressed size (zip bombs).  Extraction goes to
a temporary sibling folder that is renamed into place only when complete, so a failure
never leaves a half-extracted dataset that looks usable.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import ArchiveError
from .images import IGNORED_NAMES

DEFAULT_MAX_BYTES = 2 * 1024**3


def _check_entry(info: zipfile.ZipInfo) -> None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise ArchiveError(f"refused: entry {info.filename!r} would be written outside the target folder")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"refused: entry {info.filename!r} is a symbolic link")


def archive_digest(zip_path: Path) -> str:
    h = hashlib.sha1()
    with open(zip_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike,
                max_bytes: int = DEFAULT_MAX_BYTES, progress=None) -> Path:
    """Extract ``zip_path`` into ``target_dir`` (which must not exist yet) and return the
    dataset root inside it (a single wrapping top folder is unwrapped).

    ``progress(done_bytes, total_bytes)`` is called while extracting.
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    if not zip_path.is_file():
        raise ArchiveError(f"no such file: {zip_path}")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{zip_path.name} is not a readable zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            _check_entry(info)
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise ArchiveError(f"refused: {zip_path.name} unpacks to {total / 2**30:.2f} GiB, over the cap of {max_bytes / 2**30:.2f} GiB")
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_dir.parent))
        try:
            done = 0
            for info in infos:
                if any(p in IGNORED_NAMES for p in PurePosixPath(info.filename).parts):
                    continue
                dest = tmp / info.filename
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                done += info.file_size
                if progress:
                    progress(done, total)
            os.replace(tmp, target_dir)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ArchiveError(f"{zip_path.name} is damaged: {e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return unwrap_single_folder(target_dir)


def unwrap_single_folder(root: Path) -> Path:
    """A zip of ``mydata/`` holds one folder: the dataset is inside it."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_NAMES]
        if len(entries) == 1 and entries[0].is_dir() and not _looks_like_dataset_split(entries[0].name):
            root = entries[0]
        else:
            return root


def _looks_like_dataset_split(name: str) -> bool:
    return name.lower() in {"train", "val", "valid", "validation"}
