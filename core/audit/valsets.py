"""Which photos a run was validated on, whether two runs share them, and a run's accuracy
on another run's validation photos.

A best validation accuracy is a number about a set of photos.  Cleaning changes that
set (a leaked copy dropped from val, a mislabelled val photo relabelled), so a run
before cleaning and one after are scored on different exams: 96% on a val set with five
training photos in it and 95% on one without say nothing about which model is better.
Compare therefore says when the sets differ and scores both runs on the same photos,
the cleaned run's (``evaluate_on``), with the run's own model.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from core.data.images import ImageReadError, load_rgb


def val_photos(run: dict) -> list[tuple[str, str]] | None:
    """(photo path, class name) of the run's validation split, as ``split.json`` recorded
    it; None for a run whose photos are not on this machine (an imported bundle)."""
    split = run.get("split") or {}
    if not split.get("root") or not isinstance(split.get("val"), list):
        return None
    root, classes = Path(split["root"]), run["classes"]
    out = []
    for rel, y in split["val"]:
        if not isinstance(y, int) or not 0 <= y < len(classes):
            return None  # a damaged split: not a set anyone can be scored on
        out.append((str(root / rel), classes[y]))
    return out


def digest(photos: list[tuple[str, str]]) -> str:
    """A short name for a set of labelled photos (order does not matter)."""
    h = hashlib.blake2b(digest_size=8)
    for path, label in sorted(photos):
        h.update(f"{path}\0{label}\1".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def difference(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> dict:
    """How two validation sets differ: photos only in one, and photos in both under
    different classes."""
    la, lb = dict(a), dict(b)
    both = la.keys() & lb.keys()
    return {"only_first": len(la.keys() - lb.keys()), "only_second": len(lb.keys() - la.keys()),
            "relabelled": sum(1 for p in both if la[p] != lb[p]), "first": len(la), "second": len(lb)}


def describe(diff: dict) -> str:
    parts = []
    if diff["only_first"]:
        parts.append(f"{diff['only_first']} photo{'s' * (diff['only_first'] != 1)} only in the first")
    if diff["only_second"]:
        parts.append(f"{diff['only_second']} only in the second")
    if diff["relabelled"]:
        parts.append(f"{diff['relabelled']} under another class")
    return ", ".join(parts) or "the same photos"


def evaluate_on(run_dir, photos: list[tuple[str, str]], batch_size: int = 32) -> dict:
    """The run's accuracy on ``photos`` ((path, class name) pairs).  A class the run does
    not know counts as a miss (it could never have been predicted); unreadable photos
    are left out and counted."""
    from core.serving.predict import Predictor
    p = Predictor(run_dir)
    right = total = 0
    missing: list[str] = []
    batch: list = []

    def flush():
        nonlocal right, total
        probs = p.probabilities([img for img, _ in batch])
        for (_, label), pr in zip(batch, probs):
            right += int(p.classes[int(torch.argmax(pr))] == label)
            total += 1
        batch.clear()
    for path, label in photos:
        try:
            batch.append((load_rgb(path), label))
        except (ImageReadError, OSError):
            missing.append(path)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return {"accuracy": right / total if total else 0.0, "photos": total, "unreadable": len(missing)}
