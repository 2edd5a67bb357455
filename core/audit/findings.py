"""What is wrong with a dataset, from pooled features, small thumbnails and file digests.

Four findings, each a list worst first (``run.py`` feeds them; nothing here reads a file):

* **Label issues.** cleanlab's *self-confidence*: the out-of-sample probability of the
  given label (``crossval.py``: k-fold for training photos, the head fitted on all of
  train for validation photos).  Flagged where that head prefers another class; the
  suggestion is its choice.  With two classes, ranking by self-confidence is ranking by
  cleanlab's normalised margin too.
* **Near-duplicates and leaks.** A pair of photos is the same photo when
  - their bytes are identical (SHA-256), or
  - their features' cosine similarity is at least ``DUP_COS`` (0.93), or
  - their 16x16 grey thumbnails correlate at least ``DUP_PIX`` (0.97) and the features
    agree at least ``DUP_PIX_COS`` (0.6: two flat skies are not one photo).
  Measured on ants/bees (MobileNetV2, ImageNet, centre crops): of the 79,000 pairs of
  different photos, the closest reach cosine 0.887 and thumbnail correlation 0.838;
  copies resized to 80% and re-encoded (JPEG q85) reach cosine 0.957-0.991, so 0.93 sits
  between.  Features alone miss smaller copies (resized to 50% at q70: cosine 0.81-0.88,
  upscaling blurs what the body sees), which the thumbnails keep at 0.999 or more;
  thumbnails miss crops and mirror images (crop to 90%: 0.75-0.9), which the features
  keep at 0.944 or more.  Hence both.  A pair across train and val is a **leak**: the
  model is scored on a photo it trained on.  Tiny grey images (Fashion-MNIST, 28x28)
  are the known limit: different garments reach cosine 0.96 and correlation 0.99 there,
  so they are reported as near-duplicates, and at that size they nearly are.
* **Outliers.** Each photo's cosine similarity to its nearest class centroid (the mean
  direction of a class's training photos); an outlier lies ``OUTLIER_Z`` (5) robust
  standard deviations (1.4826 x the median absolute deviation) below the median photo,
  far from every class.  On ants/bees the median is 0.82 and the MAD 0.046 (clean and
  noisy alike): the three Fashion-MNIST photos planted in train score 7.2-8.6, the
  ``imageNotFound.gif`` placeholder shipped in the demo's train/ants 7.4-7.7, and the
  next photo 4.9; on Fashion-MNIST itself nothing reaches 5 (highest 4.1).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DUP_COS, DUP_PIX, DUP_PIX_COS = 0.93, 0.97, 0.6
OUTLIER_Z = 5.0
MAX_PAIRS = 2000          # a folder of one photo copied 100 times is 4950 pairs: the first are enough
_BLOCK = 1024             # rows of the similarity matrix held at once (memory stays ~4 MB per 1000 photos)


def label_issues(probs: np.ndarray, labels: np.ndarray, refs: list[dict], classes: list[str]) -> list[dict]:
    """Photos whose out-of-sample head prefers another class, least confident in the given
    label first.  ``refs`` are ``{"path", "split"}`` per row of ``probs``."""
    labels = np.asarray(labels, dtype=np.int64)
    given = probs[np.arange(len(labels)), labels]
    best = probs.argmax(1)
    out = [{**refs[i], "given": classes[labels[i]], "suggested": classes[int(best[i])], "score": round(float(given[i]), 4)}
           for i in np.flatnonzero(best != labels)]
    return sorted(out, key=lambda r: (r["score"], r["path"]))


def _pairs_over(sims_rows, n: int, threshold: float):
    """(i, j, value) with i < j and value >= threshold, for a similarity computed in row blocks."""
    for start in range(0, n, _BLOCK):
        block = sims_rows(start, min(n, start + _BLOCK))
        rows, cols = torch.nonzero(block >= threshold, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if c > i:
                yield i, c, float(block[r, c])


def same_photo_pairs(feats: torch.Tensor, thumbs: torch.Tensor, digests: list[str]) -> list[tuple[int, int, float, float, str]]:
    """(i, j, feature cosine, thumbnail correlation, how) for every pair judged the same
    photo; ``how`` is "identical bytes", "features" or "pixels" (the first rule met)."""
    n = len(feats)
    f = F.normalize(feats.float(), dim=1)
    t = thumbs.float()
    cos = lambda a, b: f[a:b] @ f.T  # noqa: E731
    pix = lambda a, b: t[a:b] @ t.T  # noqa: E731
    found: dict[tuple[int, int], str] = {}
    by_digest: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        by_digest.setdefault(d, []).append(i)
    for group in by_digest.values():
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                found.setdefault((group[a], group[b]), "identical bytes")
    for i, j, _ in _pairs_over(cos, n, DUP_COS):
        found.setdefault((i, j), "features")
    for i, j, _ in _pairs_over(pix, n, DUP_PIX):
        if float(f[i] @ f[j]) >= DUP_PIX_COS:
            found.setdefault((i, j), "pixels")
    out = [(i, j, float(f[i] @ f[j]), float(t[i] @ t[j]), how) for (i, j), how in found.items()]
    return sorted(out, key=lambda p: (p[4] != "identical bytes", -max(p[2], p[3]), p[0], p[1]))[:MAX_PAIRS]


def duplicates_and_leaks(pairs, refs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split the pairs: within a split (near-duplicates) and across train and val (leaks,
    the training photo first, its copy in val as ``other``)."""
    dups, leaks = [], []
    for i, j, c, p, how in pairs:
        a, b = refs[i], refs[j]
        if a["split"] != b["split"] and a["split"] == "val":
            a, b = b, a
        row = {"path": a["path"], "split": a["split"], "other": b["path"], "other_split": b["split"],
               "similarity": round(c, 4), "pixels": round(p, 4), "how": how}
        (leaks if a["split"] != b["split"] else dups).append(row)
    return dups, leaks


def outliers(feats: torch.Tensor, labels: torch.Tensor, is_train: torch.Tensor, refs: list[dict],
             classes: list[str]) -> list[dict]:
    """Photos far from every class centroid (``OUTLIER_Z`` robust deviations), furthest first."""
    f = F.normalize(feats.double(), dim=1)
    present = [c for c in range(len(classes)) if bool(((labels == c) & is_train).any())]
    if not present or len(f) < 3:
        return []
    centroids = torch.stack([F.normalize(f[(labels == c) & is_train].mean(0), dim=0) for c in present])
    sims, nearest = (f @ centroids.T).max(1)
    s = sims.numpy()
    median = float(np.median(s))
    spread = 1.4826 * float(np.median(np.abs(s - median)))
    if spread <= 0:
        return []  # every photo equally close (copies of one photo): nothing stands out
    z = (median - s) / spread
    out = [{**refs[i], "score": round(float(z[i]), 2), "similarity": round(float(s[i]), 4),
            "nearest": classes[present[int(nearest[i])]]} for i in np.flatnonzero(z >= OUTLIER_Z)]
    return sorted(out, key=lambda r: (-r["score"], r["path"]))
