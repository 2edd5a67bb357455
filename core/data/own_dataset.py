"""Datasets a user makes in the browser: classes by name, photos uploaded or shot.

On disk each is an ImageFolder, ``<data dir>/own/<id>/<class>/<photo>``, read by
training, evaluation and the CLI like any folder of class folders.  Decisions:

* **The class folder is the class name the user typed** (NFC-normalised, validated).
  Folder names become the model's labels (``scan_dataset``), and Linux stores any
  UTF-8 name, so ``蚂蚁`` stays ``蚂蚁`` on Predict without a mapping to keep in sync.
  Validation is what makes that safe: no separators, no control characters, not
  ``.``/``..``, nothing hidden or ignored by the scanner, at most 60 characters
  (240 bytes of UTF-8, under the 255-byte limit of a file name).
* **The dataset folder is an ASCII slug of the title plus 8 random hex digits**
  (unguessable, never colliding); the title as typed lives in ``dataset.json``.
* **Photos are named by their content** (first 16 hex digits of the SHA-256 of the
  uploaded bytes): a duplicate is found by name in any class, with no index to drift.
  The bytes are kept as uploaded (no recompression) under the extension of the format
  Pillow decoded, or re-encoded as PNG when that format is not one the scanner reads.
* **Owned by a tab id** (the ``sid`` in the URL).  The data dir is server-wide; on a
  classroom server a student's list shows their own datasets only, and nobody edits
  another student's photos by accident.  Two tabs of the same id may edit one dataset
  at once: every change runs under a file lock and writes atomically.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from core import paths
from core.data.datasets import VAL_DIR_NAMES
from core.data.images import IGNORED_NAMES, load_rgb
from core.errors import DatasetError, ImageReadError

MANIFEST = "dataset.json"
# A classifier needs two classes; a class needs photos to learn from after one or more are
# kept aside for validation: with fewer than 5 there is next to nothing either side.
MIN_CLASSES, MIN_IMAGES = 2, 5
MAX_CLASSES, MAX_IMAGES_PER_CLASS = 100, 2000  # a browser-made dataset on a shared server
MAX_CLASS_NAME, MAX_TITLE = 60, 80
_ID = re.compile(r"^[a-z0-9-]{1,32}-[0-9a-f]{8}$")
_PHOTO = re.compile(r"^[0-9a-f]{16}\.[a-z]{3,4}$")
# What Pillow reports -> the suffix the scanner reads.  MPO is how many phones' JPEGs open.
_SUFFIX_OF_FORMAT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
                     "TIFF": ".tif", "PPM": ".ppm"}


class OwnDatasetError(DatasetError):
    """A class name, photo or dataset of a browser-made dataset cannot be used."""


@dataclass
class OwnDataset:
    id: str
    root: Path
    title: str
    owner: str
    created: float
    classes: list[str]                  # in the order they were added
    counts: dict[str, int]              # photos per class


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)                     # original names
    duplicates: list[tuple[str, str]] = field(default_factory=list)    # (name, class already holding it)
    refused: list[tuple[str, str]] = field(default_factory=list)       # (name, reason)


def own_root() -> Path:
    return paths.DEFAULT_DATA_DIR / "own"  # read at call time: tests move the data dir


def dataset_dir(dataset_id: str) -> Path:
    """The folder of ``dataset_id``; the id names a folder, so it must be one we made."""
    if not isinstance(dataset_id, str) or not _ID.match(dataset_id):
        raise OwnDatasetError(f"no dataset with id {dataset_id!r}")
    root = own_root() / dataset_id
    if not (root / MANIFEST).is_file():
        raise OwnDatasetError(f"dataset {dataset_id!r} no longer exists")
    return root


def _clean_text(text, what: str, limit: int) -> str:
    if not isinstance(text, str):
        raise OwnDatasetError(f"{what} must be text")
    text = " ".join(unicodedata.normalize("NFC", text).split())  # one space between words, none around
    if not text:
        raise OwnDatasetError(f"{what} is empty")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
        raise OwnDatasetError(f"{what} {text!r} contains a control character")
    if len(text) > limit:
        raise OwnDatasetError(f"{what} {text[:20]!r}… is {len(text)} characters long (at most {limit})")
    return text


def check_class_name(name, existing=()) -> str:
    """``name`` as it will be stored (NFC, single spaces), or why it cannot be a class."""
    name = _clean_text(name, "class name", MAX_CLASS_NAME)
    if "/" in name or "\\" in name:
        raise OwnDatasetError(f"class name {name!r} contains a slash (it would be a path)")
    if name.startswith(".") or name in IGNORED_NAMES or name.casefold() == MANIFEST:
        raise OwnDatasetError(f"class name {name!r} is reserved (a hidden or system name the scanner skips, "
                              "or the dataset's own file)")
    folded = {e.casefold() for e in existing}
    if name.casefold() in folded:
        raise OwnDatasetError(f"there is already a class named {name!r} (names differ by more than capitals)")
    # A folder holding both "train" and "val" reads as a given train/val split, not as classes.
    lower = name.casefold()
    if (lower == "train" and folded & set(VAL_DIR_NAMES)) or (lower in VAL_DIR_NAMES and "train" in folded):
        raise OwnDatasetError(f"class name {name!r} cannot sit beside "
                              f"{'a validation class' if lower == 'train' else 'a class named train'}: "
                              "the folder would read as a train/val split")
    return name


@contextlib.contextmanager
def _locked(root: Path):
    """One change at a time per dataset, across tabs and server threads."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, changes are still atomic file by file
        yield
        return
    with open(root / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)  # hidden: the scanner skips it
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_manifest(root: Path) -> dict:
    try:
        with open(root / MANIFEST, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise OwnDatasetError(f"dataset {root.name!r} is damaged ({MANIFEST}: {e})") from None
    return m if isinstance(m, dict) else {}


def _write_manifest(root: Path, manifest: dict) -> None:
    _write_atomic(root / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"))


def _photos(class_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in class_dir.iterdir() if p.is_file() and _PHOTO.match(p.name))
    except OSError:
        return []


def _classes_on_disk(root: Path, manifest: dict) -> list[str]:
    """Class folders present, in the manifest's order (the order they were added); the
    folders are the truth, the manifest only orders them."""
    present = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    listed = [c for c in manifest.get("classes", []) if isinstance(c, str) and c in present]
    return listed + sorted(present - set(listed))


def load(dataset_id: str) -> OwnDataset:
    root = dataset_dir(dataset_id)
    m = _read_manifest(root)
    classes = _classes_on_disk(root, m)
    return OwnDataset(dataset_id, root, str(m.get("title") or dataset_id), str(m.get("owner", "")),
                      float(m.get("created", 0.0)), classes, {c: len(_photos(root / c)) for c in classes})


def create(title: str, owner: str) -> OwnDataset:
    title = _clean_text(title, "dataset name", MAX_TITLE)
    slug = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower())
    dataset_id = f"{slug.strip('-')[:32].strip('-') or 'dataset'}-{secrets.token_hex(4)}"
    root = own_root() / dataset_id
    root.mkdir(parents=True)
    _write_manifest(root, {"title": title, "owner": owner, "created": time.time(), "classes": []})
    return load(dataset_id)


def list_datasets(owner: str) -> list[OwnDataset]:
    """``owner``'s datasets, newest first; damaged ones are left out, not fatal."""
    found, base = [], own_root()
    for root in base.iterdir() if base.is_dir() else ():
        with contextlib.suppress(OwnDatasetError, OSError):  # the owner first: others' photos are not counted
            if _ID.match(root.name) and _read_manifest(root).get("owner") == owner:
                found.append(load(root.name))
    return sorted(found, key=lambda d: -d.created)


def delete(dataset_id: str) -> None:
    shutil.rmtree(dataset_dir(dataset_id))


def _change_classes(dataset_id: str, change) -> str:
    """Run ``change(root, classes) -> (new class list, result)`` under the lock and save the order."""
    root = dataset_dir(dataset_id)
    with _locked(root):
        m = _read_manifest(root)
        classes, result = change(root, _classes_on_disk(root, m))
        _write_manifest(root, {**m, "classes": classes})
    return result


def _existing(classes: list[str], name) -> str:
    name = unicodedata.normalize("NFC", name) if isinstance(name, str) else name
    if name not in classes:
        raise OwnDatasetError(f"there is no class named {name!r}")
    return name


def add_class(dataset_id: str, name: str) -> str:
    def change(root, classes):
        clean = check_class_name(name, classes)
        if len(classes) >= MAX_CLASSES:
            raise OwnDatasetError(f"a dataset made here holds at most {MAX_CLASSES} classes")
        (root / clean).mkdir()
        return classes + [clean], clean
    return _change_classes(dataset_id, change)


def rename_class(dataset_id: str, old: str, new: str) -> str:
    def change(root, classes):
        current = _existing(classes, old)
        clean = check_class_name(new, [c for c in classes if c != current])
        if clean != current:
            os.rename(root / current, root / clean)
        return [clean if c == current else c for c in classes], clean
    return _change_classes(dataset_id, change)


def remove_class(dataset_id: str, name: str) -> None:
    def change(root, classes):
        current = _existing(classes, name)
        shutil.rmtree(root / current)
        return [c for c in classes if c != current], None
    _change_classes(dataset_id, change)


def _photo_bytes(data: bytes, name: str) -> tuple[bytes, str]:
    """The bytes to store and their suffix; raises ImageReadError with the reason."""
    load_rgb(_named(data, name), draft_size=32)  # the scanner's own check: accepted here means trained on
    with Image.open(io.BytesIO(data)) as img:
        suffix = _SUFFIX_OF_FORMAT.get(img.format or "")
    if suffix:
        return data, suffix
    out = io.BytesIO()  # a format the scanner does not read by suffix (ICO, PSD, …): store it as PNG
    load_rgb(_named(data, name)).save(out, "PNG")
    return out.getvalue(), ".png"


def _named(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name  # load_rgb names the file in its errors
    return f


def add_images(dataset_id: str, class_name: str, files) -> AddResult:
    """Add ``files`` (pairs of original name and bytes) to a class: unreadable ones are
    refused with the reason, ones already in the dataset (same bytes) are skipped."""
    root = dataset_dir(dataset_id)
    result = AddResult()
    with _locked(root):
        classes = _classes_on_disk(root, _read_manifest(root))
        target = root / _existing(classes, class_name)
        count = len(_photos(target))
        held = {p.stem: c for c in classes for p in _photos(root / c)}  # content digest -> class
        for name, data in files:
            name = Path(str(name).replace("\\", "/")).name or "photo"
            digest = hashlib.sha256(data).hexdigest()[:16]
            holder = held.get(digest)
            if holder is not None:
                result.duplicates.append((name, holder))
                continue
            if count >= MAX_IMAGES_PER_CLASS:
                result.refused.append((name, f"the class already holds {MAX_IMAGES_PER_CLASS} photos, the most it can"))
                continue
            try:
                stored, suffix = _photo_bytes(data, name)
            except ImageReadError as e:
                result.refused.append((name, e.reason))
                continue
            _write_atomic(target / f"{digest}{suffix}", stored)
            result.added.append(name)
            held[digest] = target.name
            count += 1
    return result


def photos(dataset_id: str, class_name: str) -> list[Path]:
    root = dataset_dir(dataset_id)
    return _photos(root / _existing(_classes_on_disk(root, _read_manifest(root)), class_name))


def remove_image(dataset_id: str, class_name: str, photo: str) -> None:
    root = dataset_dir(dataset_id)
    with _locked(root):
        target = root / _existing(_classes_on_disk(root, _read_manifest(root)), class_name)
        if not isinstance(photo, str) or not _PHOTO.match(photo) or not (target / photo).is_file():
            raise OwnDatasetError(f"class {class_name!r} has no photo {photo!r} (removed already?)")
        (target / photo).unlink()


def missing(ds: OwnDataset) -> list[str]:
    """What the dataset lacks before it can be trained on, one sentence each; [] = ready."""
    out = []
    if len(ds.classes) < MIN_CLASSES:
        have = f"it has {len(ds.classes)}" + (f": {ds.classes[0]!r}" if ds.classes else "")
        out.append(f"add at least {MIN_CLASSES} classes ({have})")
    for c in ds.classes:
        if ds.counts[c] < MIN_IMAGES:
            need = MIN_IMAGES - ds.counts[c]
            out.append(f"class {c!r} needs {need} more photo{'s' * (need != 1)} "
                       f"(it has {ds.counts[c]}, at least {MIN_IMAGES} are needed)")
    return out


def ready_path(dataset_id, owner: str) -> str | None:
    """The folder to train on when ``owner``'s dataset is ready, else None (also for a bad
    id, or another visitor's dataset: a saved setup never reaches someone else's photos)."""
    try:
        ds = load(dataset_id)
    except (OwnDatasetError, OSError):  # deleted or being renamed by another tab: not selectable now
        return None
    return None if missing(ds) or ds.owner != owner else str(ds.root)


def fingerprint(root) -> str:
    """Changes whenever a photo or class is added, removed or renamed: photo names are
    their content, so the names alone say what the dataset holds (for scan caches)."""
    root = Path(root)
    h = hashlib.sha1()
    with contextlib.suppress(OSError):
        for c in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            h.update(c.name.encode("utf-8", "surrogateescape") + b"\0")
            h.update("\0".join(p.name for p in _photos(c)).encode() + b"\1")
    return h.hexdigest()


def thumbnail(path, size: int = 160):
    """A square, centre-cropped RGB copy of a stored photo (decoded at a reduced JPEG
    scale: cheap); square so a grid of them lines up whatever the photos' shapes."""
    return ImageOps.fit(load_rgb(path, draft_size=size), (size, size))

