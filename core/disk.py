"""The server's disk, bounded: a quota per visitor, exports as a cache, stale files swept.

What a visitor brings or asks for counts against their quota (``TRANSFERLAB_QUOTA_MB``,
500 MB): their uploads (extracted zips, weights files), the datasets they made in the
browser and the exports of their runs.  Exports can always be made again, so when a
visitor is out of room their own exports go first, and only then is an upload refused
with a message that says what to delete.  Runs themselves are not counted (a visitor
never stops being able to train); the operator sees them per visitor and can delete.

Exports and bundles are a server-wide cache bounded by ``TRANSFERLAB_EXPORTS_MB``
(2 GiB): offering one touches its mtime, and making one removes the least recently used
beyond the bound.  The feature cache bounds itself (``feature_cache.py``).

This module sits at the top of ``core`` (like the CLI): it reads every folder the
others write, and none of them imports it.
"""
from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

from core import paths
from core.access import OPERATOR, is_owner_id, owner_of
from core.data import own_dataset
from core.errors import TransferLabError
from core.runs.store import list_runs, remove_stale_partials

MB = 2**20
QUOTA_BYTES = int(float(os.environ.get("TRANSFERLAB_QUOTA_MB", 500)) * MB)
EXPORTS_MAX_BYTES = int(float(os.environ.get("TRANSFERLAB_EXPORTS_MB", 2048)) * MB)
SESSION_MAX_AGE_S = 90 * 86400
# Workspaces cost nothing to make, so quotas alone do not bound the disk: whatever the
# quotas say, an upload that would leave less than this free on the data disk is refused.
MIN_FREE_BYTES = int(float(os.environ.get("TRANSFERLAB_MIN_FREE_MB", 1024)) * MB)


class QuotaError(TransferLabError):
    """A visitor's upload would not fit in their share of the server's disk."""


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _export_files(run_dir: Path) -> list[Path]:
    exports = Path(run_dir) / "exports"
    return [f for f in exports.iterdir() if f.is_file()] if exports.is_dir() else []


def usage(owner: str, runs: list[dict] | None = None) -> dict[str, int]:
    """Bytes ``owner`` holds: uploads, own datasets and exports (counted by the quota), runs (not)."""
    runs = list_runs(paths.DEFAULT_RUNS_DIR) if runs is None else runs
    mine = [r for r in runs if r["owner"] == owner]
    up = paths.DEFAULT_DATA_DIR / "uploads" / owner
    return {"uploads": folder_bytes(up) if is_owner_id(owner) and up.is_dir() else 0,
            "datasets": sum(folder_bytes(d.root) for d in own_dataset.list_datasets(owner)),
            "exports": sum(f.stat().st_size for r in mine for f in _export_files(Path(r["dir"]))),
            "runs": sum(folder_bytes(Path(r["dir"])) for r in mine)}


def counted(u: dict[str, int]) -> int:
    return u["uploads"] + u["datasets"] + u["exports"]


def require_room(owner: str, incoming: int, what: str) -> int:
    """The bytes left for ``owner`` once ``incoming`` more are stored; their own exports are
    dropped first when that makes room.  Raises ``QuotaError`` saying what to free."""
    try:
        free = shutil.disk_usage(paths.DEFAULT_DATA_DIR if paths.DEFAULT_DATA_DIR.exists() else paths.REPO_ROOT).free
    except OSError:
        free = 1 << 62
    if free - incoming < MIN_FREE_BYTES:
        raise QuotaError(f"{what} ({incoming / MB:.1f} MB) cannot be stored: the server's disk is nearly full. "
                         "Ask the operator to make room (the Class page clears caches and stale files).")
    if owner == OPERATOR:
        return 1 << 62  # the operator's own disk
    u = usage(owner)
    if counted(u) + incoming > QUOTA_BYTES and u["exports"]:
        for r in list_runs(paths.DEFAULT_RUNS_DIR):
            if r["owner"] == owner:
                shutil.rmtree(Path(r["dir"]) / "exports", ignore_errors=True)
        u["exports"] = 0
    left = QUOTA_BYTES - counted(u) - incoming
    if left < 0:
        raise QuotaError(f"{what} ({incoming / MB:.1f} MB) does not fit in your space on this server: you use "
                         f"{counted(u) / MB:.0f} MB of {QUOTA_BYTES / MB:.0f} MB (uploads {u['uploads'] / MB:.0f} MB, "
                         f"datasets made here {u['datasets'] / MB:.0f} MB). Delete a dataset you no longer need, "
                         "or ask the operator for more room.")
    return left


def zip_unpacked_bytes(data: bytes) -> int:
    """What a zip says it unpacks to (0 if it is not a readable zip: extraction says why)."""
    import io
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return sum(i.file_size for i in zf.infolist())
    except Exception:  # noqa: BLE001 - the archive's own checks name the problem
        return 0


# ---- exports: a bounded cache -------------------------------------------------------
def touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def trim_exports(max_bytes: int = EXPORTS_MAX_BYTES, runs_dir=None) -> int:
    """Remove the least recently offered exports until all runs' exports fit in ``max_bytes``."""
    base = Path(runs_dir or paths.DEFAULT_RUNS_DIR)
    files = [f for exports in base.glob("*/exports") for f in exports.iterdir()]
    return paths.trim_oldest(files, max_bytes, lambda f: [f"{f}.parity.json"])  # an export's check goes with it


# ---- the operator's view and sweeps -------------------------------------------------
def usage_by_owner() -> dict[str, dict[str, int]]:
    """Every owner with something on disk, with ``usage``'s numbers."""
    runs = list_runs(paths.DEFAULT_RUNS_DIR)
    owners = {r["owner"] for r in runs}
    up = paths.DEFAULT_DATA_DIR / "uploads"
    owners |= {p.name for p in up.iterdir() if is_owner_id(p.name)} if up.is_dir() else set()
    own = own_dataset.own_root()
    for d in own.iterdir() if own.is_dir() else ():
        try:
            owners.add(owner_of({"owner": own_dataset.load(d.name).owner}))
        except (own_dataset.OwnDatasetError, OSError):
            continue
    return {o: usage(o, runs) for o in sorted(owners)}


def totals() -> dict[str, int]:
    data, runs = paths.DEFAULT_DATA_DIR, paths.DEFAULT_RUNS_DIR
    parts = {"runs": runs, "uploads": data / "uploads", "datasets made here": data / "own",
             "feature cache": data / "features", "sessions": data / "sessions"}
    out = {k: folder_bytes(p) if p.is_dir() else 0 for k, p in parts.items()}
    out["exports"] = sum(f.stat().st_size for d in runs.glob("*/exports") for f in d.iterdir() if f.is_file())
    return out


def clear_exports() -> int:
    return trim_exports(0)


def clear_feature_cache() -> int:
    from core.training.feature_cache import default_cache
    cache = default_cache()
    cache.clear()
    return cache.trim_disk(0)


def sweep_stale() -> dict[str, int]:
    """What start-up (and the operator's button) removes: partial runs whose writer is gone,
    extractions and uploads cut short, setups of tabs unseen for 90 days."""
    removed = {"partial runs": len(remove_stale_partials(paths.DEFAULT_RUNS_DIR))}
    n = 0
    up = paths.DEFAULT_DATA_DIR / "uploads"
    for leftover in list(up.glob("*/.incoming-*")) + list(up.glob("*/.extract-*")) if up.is_dir() else []:
        if time.time() - leftover.stat().st_mtime > 600:
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            n += 1
    removed["unfinished uploads"] = n
    n = 0
    sessions = paths.DEFAULT_DATA_DIR / "sessions"
    for f in sessions.glob("*.json") if sessions.is_dir() else ():
        if time.time() - f.stat().st_mtime > SESSION_MAX_AGE_S:
            f.unlink(missing_ok=True)
            n += 1
    removed["old tab setups"] = n
    return removed


def delete_owner_data(owner: str) -> None:
    """Everything an owner brought (uploads, datasets made or cleaned here); their runs are deleted
    one by one by the caller, which has the viewer that may."""
    if not is_owner_id(owner) or owner == OPERATOR:
        raise ValueError(f"not a visitor's owner id: {owner!r}")
    shutil.rmtree(paths.DEFAULT_DATA_DIR / "uploads" / owner, ignore_errors=True)
    for d in own_dataset.list_datasets(owner):
        own_dataset.delete(d.id)
    from core.audit import cleaned
    cleaned.delete_all(owner)  # their cleaned datasets (lists only: the photos were never copied)
