"""Where things live: the shared demo data, the torch hub cache, the runs folder.

The project runs offline beside a ``shared/`` folder (``../shared`` from the checkout)
holding the ants/bees photos and a torch hub cache.  Nothing here downloads.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS_DIR = Path(os.environ.get("TRANSFERLAB_RUNS", REPO_ROOT / "runs"))
DEFAULT_DATA_DIR = Path(os.environ.get("TRANSFERLAB_DATA", REPO_ROOT / "data"))


def shared_dir() -> Path | None:
    """The shared folder: $TRANSFERLAB_SHARED, else ``../shared`` beside the checkout."""
    candidates = [os.environ.get("TRANSFERLAB_SHARED"), REPO_ROOT.parent / "shared", REPO_ROOT / "shared"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def demo_dataset() -> Path | None:
    """The ants/bees photos of the PyTorch tutorial, if present locally."""
    shared = shared_dir()
    candidates = [shared / "datasets" / "hymenoptera_data"] if shared else []
    candidates.append(DEFAULT_DATA_DIR / "hymenoptera_data")  # where a download lands
    for p in candidates:
        if (p / "train").is_dir() and (p / "val").is_dir():
            return p
    return None


def hub_checkpoint_dirs() -> list[Path]:
    """Folders searched for torchvision weight files, the writable torch cache first."""
    import torch.hub

    dirs = [Path(torch.hub.get_dir()) / "checkpoints"]
    shared = shared_dir()
    if shared is not None:
        dirs.append(shared / "torch_home" / "hub" / "checkpoints")
    return dirs


DEMO_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"


def fetch_demo_dataset(progress=None) -> Path:
    """Download and safely extract the ants/bees photos into the data folder (used only
    where ../shared is absent and there is a network)."""
    from core.data.archive import extract_zip
    from core.models.download import download

    found = demo_dataset()
    if found:
        return found
    zip_path = DEFAULT_DATA_DIR / "hymenoptera_data.zip"
    if not zip_path.is_file():
        download(DEMO_URL, zip_path, progress)
    root = extract_zip(zip_path, DEFAULT_DATA_DIR / "hymenoptera_data-extract")
    target = DEFAULT_DATA_DIR / "hymenoptera_data"
    root.rename(target)
    return target


def uploads_dir(owner: str) -> Path:
    """Where a visitor's uploads live: one folder per owner id (``core/access.py``), so
    the same file uploaded by two visitors is two copies, each deleted with its owner's."""
    from core.access import is_owner_id
    if not is_owner_id(owner):
        raise ValueError(f"not an owner id: {owner!r}")
    return DEFAULT_DATA_DIR / "uploads" / owner


def clean_upload_name(name) -> str:
    """A browser's file name made safe to keep: only its last component, without control
    characters or separators, at most 120 characters (the extension kept)."""
    import re
    clean = re.sub(r"[\x00-\x1f\x7f/\\:]+", "_", Path(str(name).replace("\\", "/")).name).strip(" .") or "upload"
    if len(clean) > 120:
        stem, dot, ext = clean.rpartition(".")
        clean = (stem[:100] + dot + ext[:15]) if dot else clean[:120]
    return clean


def save_upload(data: bytes, name: str, owner: str = "operator") -> Path:
    """Keep a browser upload as ``<uploads of owner>/<content digest>/<its own name>``, so
    every message about it can use the name the user knows.  The name is untrusted
    (``clean_upload_name``)."""
    import hashlib

    clean = clean_upload_name(name)
    target = uploads_dir(owner) / hashlib.sha1(data).hexdigest()[:16] / clean
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.stat().st_size != len(data):
        tmp = target.with_name(f".{clean}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return target


def trim_oldest(files, max_bytes: int, companions=lambda f: ()) -> int:
    """Remove the least recently modified of ``files`` until the rest hold at most
    ``max_bytes``; each removed file's ``companions(f)`` go with it.  Returns the bytes
    freed.  The one LRU rule of every bounded cache on disk (exports, frozen features)."""
    found = []
    for f in files:
        try:
            st = f.stat()
        except OSError:  # removed meanwhile (another process trims too)
            continue
        found.append((st.st_mtime, st.st_size, f))
    total, freed = sum(size for _, size, _ in found), 0
    for _, size, f in sorted(found, key=lambda x: x[0]):
        if total - freed <= max_bytes:
            break
        f.unlink(missing_ok=True)
        for c in companions(f):
            Path(c).unlink(missing_ok=True)
        freed += size
    return freed
