"""Fetching a file from its official URL, when there is a network.

Used only when a file is not already present locally (torch hub cache, ../shared).
It writes to a temporary name and renames when complete and verified, so an
interrupted download never looks like a weights file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from core.errors import TransferLabError

TIMEOUT_S = 15


def offline() -> bool:
    return os.environ.get("TRANSFERLAB_OFFLINE", "") not in ("", "0")


def download(url: str, dest: Path, progress=None, sha256_prefix: str | None = None) -> Path:
    """Download ``url`` to ``dest``; ``progress(done, total)`` is called along the way.
    Raises ``TransferLabError`` with the reason on any failure."""
    if offline():
        raise TransferLabError(f"downloads are off (TRANSFERLAB_OFFLINE is set): cannot fetch {url}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if sha256_prefix and not h.hexdigest().startswith(sha256_prefix):
            raise TransferLabError(f"download of {url} is corrupt (sha256 does not start with {sha256_prefix})")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise TransferLabError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

