"""Which folders on the server a visitor may use as a dataset: an allow-list.

The dashboard used to take any path typed into a box, so a visitor could read photos
from anywhere the server can (the folder above the checkout, system icon folders) and,
worse, every visitor's own photos under the data folder.  Now the operator decides:

* ``TRANSFERLAB_DATASET_ROOTS``: absolute folders separated by ``os.pathsep`` (``:`` on
  Linux).  Set but empty: no server folders at all.
* unset: the ants/bees demo folder and ``datasets/`` beside the app (the operator puts
  dataset folders there; it is git-ignored).

Visitors pick from ``offered_folders()``; whatever comes back from the browser or from a
saved setup goes through ``check_folder()`` before anything reads it.  The data folder
(uploads, every visitor's own classes, sessions) and the runs folder are never a dataset,
nor is the app's own code, nor a folder that holds any of them.

Nothing here imports streamlit: the page and ``ui/state.py`` call it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.data.datasets import VAL_DIR_NAMES
from core.data.images import IMAGE_SUFFIXES, is_ignored
from core.errors import DatasetError

ROOTS_ENV = "TRANSFERLAB_DATASET_ROOTS"
DATASETS_DIR_NAME = "datasets"   # beside the app: REPO_ROOT / "datasets"
MAX_DEPTH = 2                    # a root, its sub-folders and theirs are looked at; no deeper
MAX_ENTRIES_PER_DIR = 200        # entries read from one folder when looking for datasets
MAX_ENTRIES_PER_CALL = 20_000    # all folders together: a huge root costs a bounded listing

# One message for every refusal.  A message that said "not found", "is a file" or "outside
# the allowed folders" would let a visitor map the server's disk by trying paths, so it
# deliberately says nothing about the path it refuses (the one exception to naming the
# bad input in this project's errors).
REFUSAL = ("That folder is not offered here: choose one of the listed folders "
           "(the operator decides which server folders are available).")


@dataclass(frozen=True)
class Offer:
    path: Path    # resolved; what the setup stores
    label: str    # relative to its root ("datasets/flowers"): never the server path


def allowed_roots() -> list[Path]:
    """The configured roots, resolved, existing folders only, each once."""
    configured = os.environ.get(ROOTS_ENV)
    if configured is not None:
        candidates = [c.strip() for c in configured.split(os.pathsep) if c.strip()]
    else:
        candidates = [paths.demo_dataset(), paths.REPO_ROOT / DATASETS_DIR_NAME]
    out: list[Path] = []
    for c in candidates:
        if c is None or not Path(c).is_absolute():  # a relative root would depend on the server's cwd
            continue
        try:
            p = Path(c).resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def check_folder(path) -> Path:
    """``path`` resolved, if a visitor may use it as a dataset; else ``DatasetError(REFUSAL)``
    whatever the reason (see ``REFUSAL``).  ``~`` is not expanded and relative paths are
    refused: only the absolute paths ``offered_folders()`` hands out come back here."""
    try:
        if not isinstance(path, (str, os.PathLike)) or not Path(path).is_absolute():
            raise ValueError
        resolved = Path(path).resolve(strict=True)  # symlinks and ".." gone: the real place
        ok = resolved.is_dir() and _allowed(resolved, allowed_roots())
    except (OSError, ValueError, RuntimeError):  # missing, a NUL byte, too long, a symlink loop
        ok = False
    if not ok:
        raise DatasetError(REFUSAL)
    return resolved


def offered_folders() -> list[Offer]:
    """The folders under the roots that look like a dataset, for the visitor to choose."""
    offers: list[Offer] = []
    roots = allowed_roots()
    budget = [MAX_ENTRIES_PER_CALL]
    for root in roots:
        level = [root]
        for depth in range(MAX_DEPTH + 1):
            deeper = []
            for folder in level:
                if _allowed(folder, roots) and _looks_like_dataset(folder, budget):
                    offers.append(Offer(folder, label(folder, root)))
                    continue  # its class folders are not datasets of their own
                if depth < MAX_DEPTH and not _forbidden_inside(folder, roots):
                    deeper += _subfolders(folder, budget)
            level = deeper
    return offers


def label(folder: Path, root: Path | None = None) -> str:
    """How ``folder`` is shown: its root's name and the way down from there."""
    if root is None:
        root = next((r for r in allowed_roots() if folder.is_relative_to(r)), folder)
    rel = folder.relative_to(root).as_posix()
    if not root.name:  # the operator offered "/" itself
        return rel if rel != "." else "/"
    return root.name if rel == "." else f"{root.name}/{rel}"


def _forbidden() -> list[Path]:
    """Places no visitor may read as a dataset: the data folder (uploads, everyone's own
    classes, saved sessions) and the runs folder."""
    return [Path(paths.DEFAULT_DATA_DIR).resolve(), Path(paths.DEFAULT_RUNS_DIR).resolve()]


def _forbidden_inside(folder: Path, roots: list[Path]) -> bool:
    """``folder`` is, or is inside, a forbidden place or the app's code."""
    if any(folder.is_relative_to(f) for f in _forbidden()):
        return True
    code = paths.REPO_ROOT.resolve()
    if folder.is_relative_to(code):
        # Inside the checkout only under a root that is itself a folder in it
        # (datasets/ beside the app, a ../shared inside it), never under the checkout as a whole.
        return not any(folder.is_relative_to(r) and r != code and r.is_relative_to(code) for r in roots)
    return False


def _allowed(folder: Path, roots: list[Path]) -> bool:
    if not any(folder.is_relative_to(r) for r in roots) or _forbidden_inside(folder, roots):
        return False
    # A folder holding the data, runs or code folder would be scanned through them.
    return not any(f.is_relative_to(folder) for f in [*_forbidden(), paths.REPO_ROOT.resolve()])


def _entries(folder: Path, budget: list[int]) -> list[os.DirEntry]:
    """At most MAX_ENTRIES_PER_DIR entries of ``folder`` (fewer when the call's budget runs out)."""
    out = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if len(out) >= MAX_ENTRIES_PER_DIR or budget[0] <= 0:
                    break
                budget[0] -= 1
                if not is_ignored(Path(entry.name)):
                    out.append(entry)
    except OSError:
        pass
    return out


def _subfolders(folder: Path, budget: list[int]) -> list[Path]:
    # Symlinked folders are not followed here: one pointing outside the root would be
    # refused by check_folder anyway, and one inside it is offered under its real place.
    return sorted(Path(e.path) for e in _entries(folder, budget) if e.is_dir(follow_symlinks=False))


def _holds_images(folder: Path, budget: list[int]) -> bool:
    return any(Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file() for e in _entries(folder, budget))


def _class_folders(folder: Path, budget: list[int], enough: int = 2) -> int:
    """Sub-folders of ``folder`` holding image files (by suffix, nothing decoded), up to ``enough``."""
    found = 0
    for sub in _subfolders(folder, budget):
        found += _holds_images(sub, budget)
        if found >= enough:
            break
    return found


def _looks_like_dataset(folder: Path, budget: list[int]) -> bool:
    """train/ and val/ with class folders, or at least two class folders of images: the
    layouts ``scan_dataset`` reads (a cheap look; the scan itself says what is wrong)."""
    subs = {p.name.lower(): p for p in _subfolders(folder, budget)}
    if "train" in subs and any(n in subs for n in VAL_DIR_NAMES):
        return _class_folders(subs["train"], budget) >= 2
    return _class_folders(folder, budget) >= 2
