"""One audit of a dataset: features, thumbnails and digests in, the four findings out.

Features are the pooled body outputs of every photo in its evaluation view (the centre
crop), through ``core/inside/features.eval_view``: the validation split's entry is the one
a frozen run of the same setup and the Inside page use, so whichever runs first pays for
it.  The training split is audited in the evaluation view too, not in the augmented view
a frozen run caches: measured on the noisy ants/bees, a random crop of a training photo
against its resized copy in val reaches cosine 0.80-0.96, where unrelated pairs reach
0.87 (a leak would hide among them), and label-issue recall drops from 0.92 to 0.88.

Thumbnails (16x16 grey, standardised) and SHA-256 digests are cached beside the features
(same cache, keyed by the files' paths, sizes and mtimes), so a second audit reads no
photo at all: it costs the cross-validation and the similarity matrix, about a second.
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from core.audit import crossval, findings
from core.data.datasets import Dataset
from core.inside.features import Body, cache_keys, eval_view
from core.training.feature_cache import FeatureCache, feature_key, files_signature

THUMB = 16


@dataclass
class Report:
    classes: list[str]
    label_issues: list[dict]
    near_duplicates: list[dict]
    leaks: list[dict]
    outliers: list[dict]
    num_train: int
    num_val: int
    arch: str
    weights: str
    seconds: float = 0.0
    feature_seconds: float = 0.0
    cached: bool = False                 # no photo was read: features, thumbnails and digests all cached
    timings: dict = field(default_factory=dict)

    def counts(self) -> dict:
        return {"label_issues": len(self.label_issues), "near_duplicates": len(self.near_duplicates),
                "leaks": len(self.leaks), "outliers": len(self.outliers), "train": self.num_train, "val": self.num_val}

    def to_json(self) -> dict:
        return {"label_issues": self.label_issues, "near_duplicates": self.near_duplicates, "leaks": self.leaks,
                "outliers": self.outliers, "counts": self.counts(), "classes": self.classes, "arch": self.arch,
                "weights": self.weights, "seconds": round(self.seconds, 3),
                "feature_seconds": round(self.feature_seconds, 3), "cached": self.cached,
                "thresholds": {"duplicate_cosine": findings.DUP_COS, "duplicate_thumbnail": findings.DUP_PIX,
                               "outlier_z": findings.OUTLIER_Z, "folds": crossval.FOLDS, "l2": crossval.L2}}


def _signature(path: str) -> tuple[np.ndarray, bytes]:
    from PIL import Image
    from core.data.images import load_rgb
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
    grey = load_rgb(path, draft_size=4 * THUMB).convert("L").resize((THUMB, THUMB), Image.Resampling.BOX)
    a = np.asarray(grey, dtype=np.float64).ravel()
    a = a - a.mean()
    norm = np.linalg.norm(a)
    return (a / norm if norm > 0 else a).astype(np.float32), digest  # flat photo: correlates with nothing


def signatures(samples, cache: FeatureCache | None, stop: threading.Event | None = None) -> tuple[torch.Tensor, list[str], bool]:
    """(n x 256 standardised thumbnails, hex digests, cache hit) of ``samples``."""
    def compute():
        with ThreadPoolExecutor(max_workers=2) as pool:  # decoding releases the GIL: two cores, two photos
            got = list(pool.map(_signature, [p for p, _ in samples]))
        if stop is not None and stop.is_set():
            return None
        return {"thumbs": torch.from_numpy(np.stack([t for t, _ in got])) if got else torch.zeros(0, THUMB * THUMB),
                "digests": torch.tensor([list(d) for _, d in got], dtype=torch.uint8).reshape(-1, 32)}
    if cache is None:
        value, hit = compute(), False
    else:
        value, hit = cache.get_or_compute(feature_key(kind="audit-thumbs", size=THUMB, files=files_signature(samples)),
                                          compute)
    if value is None:
        from core.data.batches import Stopped
        raise Stopped
    return value["thumbs"], [bytes(d.tolist()).hex() for d in value["digests"]], hit


def is_cached(ds: Dataset, body: Body, device: torch.device, cache: FeatureCache) -> bool:
    """Whether ``audit`` would read no photo (the page then audits at once, unasked)."""
    keys = [cache_keys(body, s, s, None, device)[0] for s in (ds.train, ds.val) if s]
    thumbs = feature_key(kind="audit-thumbs", size=THUMB, files=files_signature(ds.train + ds.val))
    return all(cache.contains(k) for k in keys + [thumbs])


def audit(ds: Dataset, body: Body, device: torch.device, cache: FeatureCache | None, seed: int = 0,
          progress=None, stop: threading.Event | None = None) -> Report:
    """The four findings for ``ds`` (paths as the dataset holds them).  ``progress(payload)``
    gets ``{"phase", "done", "total"}``; ``stop`` ends it between batches (``Stopped``)."""
    if not ds.train:
        raise ValueError("the dataset has no training photos to audit")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    splits = [("train", ds.train), ("val", ds.val)]
    feats, hits = [], 0
    for name, samples in splits:
        if not samples:
            feats.append(torch.zeros(0, 1))
            continue
        t = time.perf_counter()
        emit = (lambda p, name=name: progress({**p, "phase": f"features of the {name} photos"})) if progress else None
        x, hit = eval_view(body, samples, None, device, cache, emit, stop)
        feats.append(x)
        hits += hit
        timings[f"features_{name}"] = time.perf_counter() - t
    if not ds.val:
        feats[1] = torch.zeros(0, feats[0].shape[1])
    feature_seconds = time.perf_counter() - t0
    everything = ds.train + ds.val
    if progress:
        progress({"phase": "thumbnails", "done": 0, "total": 1})
    t = time.perf_counter()
    thumbs, digests, thumb_hit = signatures(everything, cache, stop)
    timings["thumbnails"] = time.perf_counter() - t
    refs = [{"path": p, "split": "train"} for p, _ in ds.train] + [{"path": p, "split": "val"} for p, _ in ds.val]
    labels = torch.tensor([y for _, y in everything])
    n_train = len(ds.train)

    t = time.perf_counter()
    probs, val_probs = crossval.out_of_fold(feats[0], labels[:n_train], len(ds.classes), seed, extra=feats[1])
    allprobs = probs if val_probs is None else np.concatenate([probs, val_probs])
    issues = findings.label_issues(allprobs, labels.numpy(), refs, ds.classes)
    timings["cross_validation"] = time.perf_counter() - t
    t = time.perf_counter()
    x = torch.cat(feats)
    dups, leaks = findings.duplicates_and_leaks(findings.same_photo_pairs(x, thumbs, digests), refs)
    is_train = torch.arange(len(everything)) < n_train
    far = findings.outliers(x, labels, is_train, refs, ds.classes)
    timings["similarities"] = time.perf_counter() - t
    return Report(ds.classes, issues, dups, leaks, far, n_train, len(ds.val), body.arch, body.weights,
                  time.perf_counter() - t0, feature_seconds, hits == sum(1 for _, s in splits if s) and thumb_hit,
                  {k: round(v, 3) for k, v in timings.items()})

