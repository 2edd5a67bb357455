"""A visitor's uploaded .zip of photos, kept once: extracted into their own folder, the
archive itself deleted.

The extraction is the dataset (``<uploads of owner>/<content digest>/``); keeping the zip
beside it doubled every upload on a server's disk.  The same archive uploaded again by
the same visitor is found by its digest and not extracted twice; by another visitor it
is their own copy (their quota, their deletion).  ``max_bytes`` is the room left in
the visitor's quota (``core/disk.py``), so an archive that would overflow it is refused
by the same size check that refuses a zip bomb, before anything is written.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from core import paths
from core.data import archive
from core.data.datasets import scan_dataset
from core.errors import DatasetError

DONE = ".extracted"   # written last: a folder without it is an extraction cut short


def accept_zip(data: bytes, name: str, owner: str, max_bytes: int = archive.DEFAULT_MAX_BYTES, progress=None) -> Path:
    """Extract an uploaded zip for ``owner``; returns the dataset folder inside it.
    Raises ``ArchiveError`` (a bad or oversized archive) naming the user's file."""
    shown = paths.clean_upload_name(name)
    target = paths.uploads_dir(owner) / f"zip-{hashlib.sha256(data).hexdigest()[:16]}"
    if (target / DONE).is_file():
        return archive.unwrap_single_folder(target)
    shutil.rmtree(target, ignore_errors=True)  # a previous extraction cut short
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=".zip", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        root = archive.extract_zip(tmp, target, max_bytes=max_bytes, progress=progress, display_name=shown)
        try:  # an archive that is no dataset is refused here, not kept to break every page later
            scan_dataset(root, confine=True)
        except DatasetError as e:
            shutil.rmtree(target, ignore_errors=True)
            # The reason names the extraction's own folder (an internal id): the visitor's file instead.
            reason = str(e).replace(f"{root.name}/", "").replace(root.name, "the archive")
            raise DatasetError(f"{shown} is not a dataset: {reason}") from None
        (target / DONE).write_text(shown, encoding="utf-8")
        return root
    finally:
        os.unlink(tmp)


def with_temp_file(data: bytes, owner: str, suffix: str, use):
    """``use(path)`` on the bytes written to a temporary file in ``owner``'s folder,
    removed afterwards whatever happens (a bundle is imported, then not kept)."""
    folder = paths.uploads_dir(owner)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return use(Path(tmp))
    finally:
        os.unlink(tmp)
