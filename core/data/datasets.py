"""Datasets: find the classes and images, split them, and report every file left out.

Two layouts are understood (as in torchvision's ImageFolder and the PyTorch tutorial):

* ``root/train/<class>/*`` and ``root/val/<class>/*``: the split is given;
* ``root/<class>/*``: one pool, split per class with a seeded shuffle (stratified).

A ``.zip`` of either layout is extracted safely first (see ``archive.py``).
"""
from __future__ import annotations

import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.data import archive

from core import paths
from core.errors import DatasetError
from core.data.images import IMAGE_SUFFIXES, ImageReadError, is_ignored, load_rgb

VAL_DIR_NAMES = ("val", "valid", "validation")

# (path, size, mtime) -> reason or None. Scanning the same folder twice (every rerun of a
# dashboard page) then costs a stat per file, not a decode.
_CHECKED: dict[tuple[str, int, int], str | None] = {}


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to root, reason)
    layout: str = "split"  # "split" (train/ + val/) or "folders" (split by seed)
    val_split: float | None = None
    seed: int | None = None

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: {"train": {"ants": 124, ...}, "val": {...}}."""
        out = {}
        for split, samples in (("train", self.train), ("val", self.val)):
            c = Counter(label for _, label in samples)
            out[split] = {name: c.get(i, 0) for i, name in enumerate(self.classes)}
        return out


def check_image(path: str) -> str | None:
    """None if ``path`` decodes as an image, else the reason it is skipped."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"unreadable: {e.strerror}"
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        try:
            load_rgb(path, draft_size=32)  # full decode, at a small DCT scale for JPEG
            _CHECKED[key] = None
        except ImageReadError as e:
            _CHECKED[key] = str(e)
    return _CHECKED[key]


def _escapes(p: Path, inside: Path | None) -> bool:
    """``p`` is a symlink whose target is not under ``inside`` (the confined scan's root).
    Only links are resolved: a plain entry under the root is under it."""
    if inside is None or not p.is_symlink():
        return False
    try:
        return not p.resolve(strict=True).is_relative_to(inside)
    except (OSError, RuntimeError):  # dangling or a loop: nothing to read there anyway
        return True


def _class_dirs(folder: Path, inside: Path | None = None) -> list[Path]:
    # A folder linking outside a confined root is not a class: silently, as hidden ones.
    return sorted((p for p in folder.iterdir() if p.is_dir() and not is_ignored(p) and not _escapes(p, inside)),
                  key=lambda p: p.name)


def _files_of(class_dir: Path, skipped: list, inside: Path | None = None) -> list[str]:
    files = []
    # os.walk does not descend into symlinked sub-folders; the class folder itself was
    # checked by _class_dirs, so only file links are left to confine.
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(Path(d)))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if is_ignored(p):
                continue
            if _escapes(p, inside):
                skipped.append((str(p), "a link to a file outside the dataset folder: not read"))
                continue
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((str(p), f"not an image file (suffix {p.suffix or 'none'})"))
                continue
            files.append(str(p))
    return files


def _usable(files: list[str], skipped: list) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        reasons = list(pool.map(check_image, files))
    for f, r in zip(files, reasons):
        if r is not None:
            skipped.append((f, r))
    return [f for f, r in zip(files, reasons) if r is None]


def _collect(folder: Path, classes: list[str], skipped: list, inside: Path | None = None) -> dict[str, list[str]]:
    return {c: _usable(_files_of(folder / c, skipped, inside), skipped)
            if (folder / c).is_dir() and not _escapes(folder / c, inside) else [] for c in classes}


def stratified_split(per_class: dict[str, list[str]], classes: list[str], val_split: float, seed: int):
    """Per class: shuffle with ``seed`` and send round(n * val_split) files (at least one
    when the class has two or more) to validation."""
    rng = random.Random(seed)
    train, val = [], []
    for label, c in enumerate(classes):
        files = sorted(per_class[c])
        rng.shuffle(files)
        n_val = round(len(files) * val_split)
        if len(files) >= 2:
            n_val = min(max(n_val, 1), len(files) - 1)
        val += [(f, label) for f in files[:n_val]]
        train += [(f, label) for f in files[n_val:]]
    return train, val


def resolve_source(source: str | os.PathLike, max_zip_bytes: int = archive.DEFAULT_MAX_BYTES, progress=None,
                   display_name: str | None = None) -> Path:
    """A folder is used as is; a .zip is extracted (once per archive content) under the
    data folder and the folder inside it returned.  ``display_name`` is how messages
    name an uploaded archive (the user's file name, not the server's copy)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetError(f"dataset not found: {display_name or source}")
    if source.is_file():
        if source.suffix.lower() != ".zip":
            raise DatasetError(f"{display_name or source.name} is a file but not a .zip: "
                               "give a folder of class folders or a .zip of one")
        target = paths.DEFAULT_DATA_DIR / f"{source.stem}-{archive.archive_digest(source)}"
        if target.is_dir():
            return archive.unwrap_single_folder(target)
        return archive.extract_zip(source, target, max_bytes=max_zip_bytes, progress=progress, display_name=display_name)
    return source


def scan_dataset(source: str | os.PathLike, val_split: float = 0.2, seed: int = 0,
                 max_zip_bytes: int = archive.DEFAULT_MAX_BYTES, progress=None, *, confine: bool = False) -> Dataset:
    """Find classes and usable images under ``source`` (folder or .zip).

    ``confine``: read nothing outside the dataset folder; symlinked class folders and
    files whose target is elsewhere are left out (the dashboard: a link inside an offered
    folder must not open the rest of the disk to visitors).  The CLI's operator may
    build a dataset of links on purpose, so it reads them as before.
    ``skipped`` paths are relative to the dataset folder: they are shown in the browser
    and written into runs, where the server's layout is nobody's business."""
    if not 0.0 < val_split < 1.0:
        raise DatasetError(f"val split must be between 0 and 1, got {val_split}")
    root = resolve_source(source, max_zip_bytes, progress)
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    if confine:
        root = root.resolve()  # a root reached through a link is confined to where it really is
    inside = root if confine else None
    # Messages name folders as the user sees them: from the dataset's own name down when
    # confined (the browser), by their full path for the CLI's operator.
    shown = (lambda f: Path(root.name, f.relative_to(root)).as_posix()) if confine else str
    skipped: list[tuple[str, str]] = []
    top = {p.name.lower(): p for p in _class_dirs(root, inside)}
    val_dir = next((top[n] for n in VAL_DIR_NAMES if n in top), None)
    if "train" in top and val_dir is not None:
        train_dir = top["train"]
        classes = sorted({p.name for p in _class_dirs(train_dir, inside)} | {p.name for p in _class_dirs(val_dir, inside)})
        _require_classes(classes, shown(train_dir))
        per_train = _collect(train_dir, classes, skipped, inside)
        per_val = _collect(val_dir, classes, skipped, inside)
        _require_images(per_train, shown(train_dir))
        train = [(f, i) for i, c in enumerate(classes) for f in per_train[c]]
        val = [(f, i) for i, c in enumerate(classes) for f in per_val[c]]
        if not val:
            raise DatasetError(f"no usable validation image in {shown(val_dir)}")
        return Dataset(root, classes, train, val, _relative(skipped, root), "split")
    classes = [p.name for p in _class_dirs(root, inside)]
    _require_classes(classes, shown(root))
    per_class = _collect(root, classes, skipped, inside)
    _require_images(per_class, shown(root))
    train, val = stratified_split(per_class, classes, val_split, seed)
    return Dataset(root, classes, train, val, _relative(skipped, root), "folders", val_split, seed)


def _relative(skipped: list[tuple[str, str]], root: Path) -> list[tuple[str, str]]:
    # Every path was built as root / ..., so relative_to cannot fail.
    return [(Path(p).relative_to(root).as_posix(), reason) for p, reason in skipped]


def _require_classes(classes: list[str], folder: str) -> None:
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DatasetError(f"{folder} needs at least 2 class folders (found {found}); "
                           "expected <folder>/<class>/<images> or <folder>/train|val/<class>/<images>")


def _require_images(per_class: dict[str, list[str]], folder: str) -> None:
    empty = [c for c, files in per_class.items() if not files]
    if empty:
        raise DatasetError(f"class folder {folder}/{empty[0]} has no usable image"
                           + (f" (nor {len(empty) - 1} more)" if len(empty) > 1 else ""))
