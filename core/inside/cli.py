"""``python -m core inside DATA``: how separable a body makes the classes, before any head.

Same contract as every other command: one JSON line on stdout (``knn_acc``,
``linear_probe_acc``, ``num_train``, ``num_val``, ``arch``, ``weights`` and the rest),
progress on stderr, bad input exits 2 with one line.  With ``--weights RUN_DIR`` the
line adds ``stage_change``: per stage of the family table, input first, the relative
weight change from the run's start and the linear CKA of its outputs before and after,
on DATA's validation photos.

Features go through the shared cache with the keys a frozen run of the same data, seed
and weights uses (``core/inside/features.py``): after such a run, or a second time, no
image goes through the body.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def add_inside_command(sub) -> None:
    p = sub.add_parser("inside", help="how well a body separates the classes before training (k-NN, linear probe); "
                                      "with a RUN_DIR what training changed per stage")
    p.add_argument("data", help="a dataset folder or .zip, as for train")
    p.add_argument("--arch", default=None, help="architecture (default mobilenet_v2; a RUN_DIR brings its own)")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to a weights file | RUN_DIR")
    p.add_argument("--seed", type=int, default=0,
                   help="the split of a one-folder dataset, the random init and the training view, as train's --seed")
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--k", type=int, default=5, help="neighbours for the k-NN accuracy (cosine similarity)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.set_defaults(fn=cmd_inside)


def _body(a, num_classes: int, device):
    """(Body, run dict or None) for --weights; every bad value is a one-line error."""
    from core.inside.features import build_body, run_body
    from core.models.zoo import check_arch
    from core.runs.store import load_run
    w = a.weights
    if w not in ("imagenet", "none") and Path(w).is_dir():
        run = load_run(w)  # RunError: not a finished run, damaged files
        arch = run["config"].get("arch")
        if a.arch and a.arch != arch:
            raise ValueError(f"--arch {a.arch} does not match the run {run['name']!r}, which is a {arch}")
        return run_body(run, device), run
    arch = check_arch(a.arch or "mobilenet_v2")
    kind = {"imagenet": "imagenet", "none": "random"}.get(w, "file")
    return build_body(kind, arch, num_classes, device, seed=a.seed, weights_file=w if kind == "file" else None), None


def progress_printer():
    """A progress callback printing a line on stderr at most every 2 s (and at each end):
    the inside and audit commands' feedback while the body runs."""
    last = [0.0]

    def show(p: dict) -> None:
        now = time.monotonic()
        if p.get("done") == p.get("total") or now - last[0] > 2:
            last[0] = now
            what = {"decode": f"reading {p.get('what', 'images')}", "features": "running the body",
                    "stages": "stage outputs"}.get(p.get("phase"), p.get("phase"))
            print(f"{what}: {p.get('done')}/{p.get('total')}", file=sys.stderr, flush=True)
    return show


def cmd_inside(a) -> int:
    from core.data.datasets import scan_dataset
    from core.device import configure_threads, pick_device
    from core.inside import change, filters, separability
    from core.inside.features import extract, is_cached
    from core.training.feature_cache import default_cache
    from core.training.train_config import TrainConfig
    if a.k < 1:
        raise ValueError(f"--k {a.k}: need at least one neighbour")
    configure_threads()
    device = pick_device(a.device)
    ds = scan_dataset(a.data, a.val_split, a.seed)
    body, run = _body(a, len(ds.classes), device)
    cfg, cache = TrainConfig(seed=a.seed), default_cache()
    cached = is_cached(body, ds.train, ds.val, cfg, device, cache)
    print(f"{body.arch} ({body.label}): features of {len(ds.train)} training and {len(ds.val)} validation images"
          + (" from the feature cache" if cached else ", extracting"), file=sys.stderr, flush=True)
    feats = extract(body, ds.train, ds.val, cfg, device, cache, progress_printer())
    m = separability.measure(feats, a.k)
    _, weight = filters.first_conv(body.model)
    out = {"arch": body.arch, "weights": body.weights, "knn_acc": m["knn_acc"], "linear_probe_acc": m["linear_probe_acc"],
           "k": m["k"], "num_train": m["num_train"], "num_val": m["num_val"], "classes": ds.classes,
           "feature_dims": m["dims"], "pca_variance": m["pca_variance"], "train_view": feats.train_view,
           "feature_seconds": round(feats.seconds, 3), "measure_seconds": round(m["seconds"], 3),
           "feature_cache_hits": feats.hits, "first_conv": filters.describe(weight), "device": str(device)}
    if run is not None:
        start, what = change.start_of(run, device)
        out["start"] = what
        out["stage_change"] = None
        # The saved weights are the best epoch's: one in a head-only phase left the body at its start.
        out["best_epoch"] = run["summary"].get("best_epoch")
        out["best_epoch_before_unfreeze"] = change.saved_before_unfreeze(run) is not None
        if start is not None:
            rows = change.change_table(body, start, ds.val, device, cache, progress_printer())
            out["stage_change"] = [{**r, "rel_change": _round(r["rel_change"]), "cka": _round(r.get("cka"))} for r in rows]
    print(json.dumps(out, ensure_ascii=False))
    return 0


def _round(v):
    return None if v is None else round(v, 6)
