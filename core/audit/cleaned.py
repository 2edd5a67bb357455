"""Cleaned datasets: a source dataset plus the visitor's exclusions and relabels, with undo.

Cleaning never touches the source.  The demo, a server folder, an uploaded zip or a
dataset made in the browser stays byte for byte as it was; a cleaned dataset is one
small JSON file (``<data dir>/cleaned/<id>/cleaned.json``): where the source is, the
split it was read with, the photos left out and the photos given another class, each
named by its path under the source's folder.  Training reads the source and applies the
lists (``dataset``), so nothing is copied: a few kilobytes per cleaning, which is why
the visitor's disk quota does not count them (``MAX_PER_OWNER`` bounds how many).

Rules, in one place:

* **Owned.** A cleaned dataset belongs to the visitor who made it (``core/access.py``):
  nobody else sees it, lists it, changes it or trains on it (the operator may).  Asked
  for one that is not theirs, a visitor is told it does not exist, as for a wrong id.
* **Its source must stay theirs to read.** Every use checks the source again as the
  Data page would: the demo, a folder the operator still offers, the visitor's own zip
  upload or own classes.  A source that went away (deleted, no longer offered) makes
  the cleaned dataset unusable with a message saying so, never a path to someone else's.
* **Undo.** Every change records what it replaced; ``undo`` puts the last one back.
* Changes run under a file lock and write atomically (as ``own_dataset.py`` does).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core import paths
from core.access import OPERATOR, Viewer
from core.data import own_dataset, server_folders
from core.data.datasets import Dataset, scan_dataset
from core.data.own_dataset import _locked, _write_atomic  # the same lock and atomic write as datasets made here
from core.errors import DatasetError

MANIFEST = "cleaned.json"
SOURCES = ("demo", "folder", "zip", "own")
MAX_PER_OWNER = 20          # each is a few kB; the bound keeps a scripted visitor from filling the disk with them
MAX_HISTORY = 500           # undo steps kept
MAX_PATHS = 100_000         # exclusions or relabels in one dataset (far above any dataset made here)
_ID = re.compile(r"^clean-[0-9a-f]{10}$")


class CleanedError(DatasetError):
    """A cleaned dataset, or a change to it, cannot be used."""


@dataclass
class Cleaned:
    id: str
    title: str
    owner: str
    created: float
    source: dict                       # {"kind", "path", "label", "val_split", "seed"[, "own_id"]}
    exclude: list[str]                 # paths under the source folder, sorted
    relabel: dict[str, str]            # path -> class name
    history: list[dict]
    version: int                       # +1 per change: the scan caches key on it

    def record(self) -> dict:
        """What a run writes into its config: which cleaning, at which version."""
        return {"id": self.id, "title": self.title, "source": self.source.get("label"), "version": self.version,
                "excluded": len(self.exclude), "relabelled": len(self.relabel)}


def root_dir() -> Path:
    return paths.DEFAULT_DATA_DIR / "cleaned"  # read at call time: tests move the data dir


def _folder(cleaned_id) -> Path:
    if not isinstance(cleaned_id, str) or not _ID.match(cleaned_id):
        raise CleanedError(f"no cleaned dataset with id {cleaned_id!r}")
    return root_dir() / cleaned_id


def _read(folder: Path) -> Cleaned:
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return Cleaned(folder.name, str(m["title"]), str(m["owner"]), float(m["created"]), dict(m["source"]),
                       sorted(m.get("exclude", [])), dict(m.get("relabel", {})), list(m.get("history", [])),
                       int(m.get("version", 0)))
    except FileNotFoundError:
        raise CleanedError(f"no cleaned dataset with id {folder.name!r}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CleanedError(f"cleaned dataset {folder.name!r} is damaged ({MANIFEST}: {e})") from None


def _write(folder: Path, c: Cleaned) -> None:
    body = {k: v for k, v in dataclasses.asdict(c).items() if k != "id"}
    _write_atomic(folder / MANIFEST, json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8"))


def load(cleaned_id, viewer: Viewer) -> Cleaned:
    """The cleaned dataset, if ``viewer`` may see it; another visitor's reads as missing."""
    c = _read(_folder(cleaned_id))
    if not viewer.can_change(c.owner):  # never published: seeing is owning
        raise CleanedError(f"no cleaned dataset with id {cleaned_id!r}")
    return c


def list_cleaned(viewer: Viewer) -> list[Cleaned]:
    """The visitor's own cleaned datasets, newest first (the operator's are the operator's:
    the Data page lists what one may train on, not the whole class's)."""
    found = []
    base = root_dir()
    for folder in base.iterdir() if base.is_dir() else ():
        if _ID.match(folder.name):
            try:
                c = _read(folder)
            except CleanedError:
                continue  # damaged: left out of the list, not fatal
            if c.owner == viewer.owner:
                found.append(c)
    return sorted(found, key=lambda c: -c.created)


def check_source(source: dict, owner: str) -> Path:
    """The source's folder, if ``owner`` may still read it; else ``CleanedError`` saying so
    in words that name nothing on the server's disk."""
    kind, path = source.get("kind"), source.get("path")
    gone = CleanedError(f"the source of this cleaned dataset ({source.get('label', kind)}) is no longer available to "
                        "you: it was deleted, or the operator no longer offers it")
    if kind not in SOURCES or not isinstance(path, str):
        raise gone
    p = Path(path)
    if kind == "demo":
        demo = paths.demo_dataset()
        ok = demo is not None and p == demo.resolve()
    elif kind == "folder":
        try:
            ok = server_folders.check_folder(p) == p
        except DatasetError:
            ok = False
    elif kind == "zip":
        ok = owner != OPERATOR and p.resolve().is_relative_to(paths.uploads_dir(owner).resolve()) and p.is_dir()
    else:
        ready = own_dataset.ready_path(source.get("own_id"), owner)
        ok = ready is not None and Path(ready).resolve() == p
    if not ok and owner == OPERATOR and kind in ("folder", "zip") and p.is_dir():
        ok = True  # the operator's own sources (the CLI's folders) are theirs to read
    if not ok:
        raise gone
    return p


def make_source(kind: str, path: str, label: str, val_split: float, seed: int, owner: str,
                own_id: str | None = None) -> dict:
    """A source record for ``create``: the Data page's current selection, checked."""
    source = {"kind": kind, "path": str(Path(path).resolve()), "label": label, "val_split": float(val_split),
              "seed": int(seed)}
    if kind == "own":
        source["own_id"] = own_id
    check_source(source, owner)
    return source


def create(source: dict, viewer: Viewer, title: str | None = None) -> Cleaned:
    check_source(source, viewer.owner)
    mine = list_cleaned(viewer)
    if len(mine) >= MAX_PER_OWNER:
        raise CleanedError(f"you have {len(mine)} cleaned datasets, the most one visitor keeps here: delete one on "
                           "the Clean page first")
    same = sum(1 for c in mine if c.source.get("path") == source["path"])
    title = title or f"{source['label']} · cleaned" + (f" ({same + 1})" if same else "")
    folder = root_dir() / f"clean-{secrets.token_hex(5)}"
    folder.mkdir(parents=True)
    c = Cleaned(folder.name, title, viewer.owner, time.time(), source, [], {}, [], 0)
    _write(folder, c)
    return c


def find_for(source: dict, viewer: Viewer) -> Cleaned | None:
    """The visitor's newest cleaning of this source and split, if any."""
    key = (source.get("path"), source.get("val_split"), source.get("seed"))
    return next((c for c in list_cleaned(viewer)
                 if (c.source.get("path"), c.source.get("val_split"), c.source.get("seed")) == key), None)


def delete(cleaned_id, viewer: Viewer) -> None:
    c = _read(_folder(cleaned_id))
    if not viewer.can_change(c.owner):
        raise CleanedError(f"no cleaned dataset with id {cleaned_id!r}")
    shutil.rmtree(_folder(cleaned_id))


def delete_all(owner: str) -> None:
    """Every cleaned dataset of ``owner`` (the operator deleting a visitor's data)."""
    for c in list_cleaned(Viewer(owner)):
        shutil.rmtree(_folder(c.id), ignore_errors=True)


def _checked_paths(rel_paths) -> list[str]:
    out = []
    for rel in rel_paths:
        p = PurePosixPath(rel) if isinstance(rel, str) else None
        if p is None or not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or len(rel) > 1000:
            raise CleanedError(f"not a photo path inside the dataset: {rel!r}")
        out.append(p.as_posix())
    return out


def _change(cleaned_id, viewer: Viewer, what: str, apply) -> Cleaned:
    """Run ``apply(exclude set, relabel dict)`` on the dataset under its lock, recording the
    previous state of every path it touched so that ``undo`` can put it back."""
    with _lock(cleaned_id) as folder:
        c = load(cleaned_id, viewer)
        exclude, relabel = set(c.exclude), dict(c.relabel)
        touched = apply(exclude, relabel)
        if len(exclude) > MAX_PATHS or len(relabel) > MAX_PATHS:
            raise CleanedError(f"a cleaned dataset holds at most {MAX_PATHS} exclusions and as many relabels")
        before = {p: [p in c.exclude, c.relabel.get(p)] for p in touched}
        if all(before[p] == [p in exclude, relabel.get(p)] for p in touched):
            return c  # nothing changed (kept as it was): no undo step for it
        history = (c.history + [{"what": what, "before": before, "at": time.time()}])[-MAX_HISTORY:]
        c = dataclasses.replace(c, exclude=sorted(exclude), relabel=relabel, history=history, version=c.version + 1)
        _write(folder, c)
    return c


@contextlib.contextmanager
def _lock(cleaned_id):
    """The dataset's folder, held under its lock (a deleted one is missing, not a crash)."""
    folder = _folder(cleaned_id)
    if not (folder / MANIFEST).is_file():
        raise CleanedError(f"no cleaned dataset with id {cleaned_id!r}")
    with _locked(folder):
        yield folder


def change(cleaned_id, viewer: Viewer, excluded: dict, labels: dict, classes: list[str], what: str) -> Cleaned:
    """Several decisions as one undo step: ``excluded`` maps paths to left out (True) or
    back in (False), ``labels`` maps paths to a class name or None (the folder's class)."""
    rels_ex = dict(zip(_checked_paths(list(excluded)), excluded.values()))
    rels_la = dict(zip(_checked_paths(list(labels)), labels.values()))
    for rel, name in rels_la.items():
        if name is not None and name not in classes:
            raise CleanedError(f"{rel}: there is no class named {name!r} (classes: {', '.join(classes)})")

    def apply(ex, re_):
        for rel, out in rels_ex.items():
            (ex.add if out else ex.discard)(rel)
        for rel, name in rels_la.items():
            if name is None:
                re_.pop(rel, None)
            else:
                re_[rel] = name
        return list(dict.fromkeys([*rels_ex, *rels_la]))
    return _change(cleaned_id, viewer, what, apply)


def exclude(cleaned_id, viewer: Viewer, rel_paths, what: str | None = None) -> Cleaned:
    """Leave ``rel_paths`` out of training and validation."""
    rels = _checked_paths(rel_paths)

    def apply(ex, _re):
        ex.update(rels)
        return rels
    return _change(cleaned_id, viewer, what or f"excluded {len(rels)} photo{'s' * (len(rels) != 1)}", apply)


def relabel(cleaned_id, viewer: Viewer, changes: dict, classes: list[str], given: dict | None = None,
            what: str | None = None) -> Cleaned:
    """Give each photo of ``changes`` (path -> class name) that class; a photo given back
    its folder's class (``given``: path -> class) simply loses its relabel."""
    rels = dict(zip(_checked_paths(list(changes)), changes.values()))
    for rel, name in rels.items():
        if name not in classes:
            raise CleanedError(f"{rel}: there is no class named {name!r} (classes: {', '.join(classes)})")

    def apply(ex, re_):
        for rel, name in rels.items():
            if given is not None and given.get(rel) == name:
                re_.pop(rel, None)
            else:
                re_[rel] = name
            ex.discard(rel)  # relabelled means kept, with its new class
        return list(rels)
    return _change(cleaned_id, viewer, what or f"relabelled {len(rels)} photo{'s' * (len(rels) != 1)}", apply)


def restore(cleaned_id, viewer: Viewer, rel_paths) -> Cleaned:
    """Put photos back as the source has them (neither excluded nor relabelled)."""
    rels = _checked_paths(rel_paths)

    def apply(ex, re_):
        for rel in rels:
            ex.discard(rel)
            re_.pop(rel, None)
        return rels
    return _change(cleaned_id, viewer, f"restored {len(rels)} photo{'s' * (len(rels) != 1)}", apply)


def undo(cleaned_id, viewer: Viewer) -> tuple[Cleaned, str | None]:
    """Undo the last change; (dataset, what was undone or None when there was nothing)."""
    with _lock(cleaned_id) as folder:
        c = load(cleaned_id, viewer)
        if not c.history:
            return c, None
        step = c.history[-1]
        exclude, relabel = set(c.exclude), dict(c.relabel)
        for rel, (was_excluded, was_label) in step["before"].items():
            (exclude.add if was_excluded else exclude.discard)(rel)
            if was_label is None:
                relabel.pop(rel, None)
            else:
                relabel[rel] = was_label
        c = dataclasses.replace(c, exclude=sorted(exclude), relabel=relabel, history=c.history[:-1],
                                version=c.version + 1)
        _write(folder, c)
    return c, step["what"]


def rel_path(ds_root, path) -> str:
    """How a cleaned dataset names a photo of its source: its path under the source folder."""
    return Path(path).relative_to(ds_root).as_posix()


def apply_to(ds: Dataset, c: Cleaned) -> Dataset:
    """``ds`` (the source, scanned) with ``c``'s exclusions and relabels.  Paths the source
    no longer holds are ignored; a relabel to a class the source no longer has is too."""
    excluded, index = set(c.exclude), {name: i for i, name in enumerate(ds.classes)}

    def fix(samples):
        out = []
        for path, y in samples:
            rel = rel_path(ds.root, path)
            if rel not in excluded:
                out.append((path, index.get(c.relabel.get(rel), y)))
        return out
    return dataclasses.replace(ds, train=fix(ds.train), val=fix(ds.val))


def dataset(cleaned_id, viewer: Viewer) -> Dataset:
    """The cleaned dataset, ready to train on: the source scanned with its recorded split
    (confined, as the dashboard scans), the lists applied.  ``.cleaning`` carries its
    ``record()`` for the run's config."""
    c = load(cleaned_id, viewer)
    root = check_source(c.source, c.owner)
    ds = apply_to(scan_dataset(root, c.source.get("val_split", 0.2), c.source.get("seed", 0), confine=True), c)
    if not ds.train or not ds.val:
        raise CleanedError(f"{c.title} leaves no {'training' if not ds.train else 'validation'} photo: undo an "
                           "exclusion on the Clean page")
    ds.cleaning = c.record()
    return ds
