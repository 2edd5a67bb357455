"""``python -m core audit DATA``: mislabelled photos, near-duplicates, train/val leaks and
outliers, as one JSON line.

Same contract as every other command: one JSON line on stdout (``label_issues`` as
``{path, split, given, suggested, score}`` least confident first, ``near_duplicates`` and
``leaks`` as ``{path, other, similarity, pixels, how}``, ``outliers`` as ``{path, score,
similarity, nearest}``, ``counts``, the thresholds and the time), progress on stderr,
bad input exits 2 with one line.  Features go through the shared cache under a frozen
run's validation keys (``core/audit/run.py``): a second audit reads no photo.
"""
from __future__ import annotations

import json
import sys


def add_audit_command(sub) -> None:
    p = sub.add_parser("audit", help="find label issues, near-duplicates, train/val leaks and outliers "
                                     "(pretrained features, k-fold linear head)")
    p.add_argument("data", help="a dataset folder or .zip, as for train")
    p.add_argument("--arch", default="mobilenet_v2", help="the body whose features are compared")
    p.add_argument("--weights", default="imagenet", help="imagenet | PATH to a weights file")
    p.add_argument("--seed", type=int, default=0, help="the folds of the cross-validation, and the split of a "
                                                       "one-folder dataset as train's --seed")
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.set_defaults(fn=cmd_audit)


def cmd_audit(a) -> int:
    from core.audit.run import audit
    from core.data.datasets import scan_dataset
    from core.device import configure_threads, pick_device
    from core.inside.cli import progress_printer
    from core.inside.features import build_body
    from core.models.zoo import check_arch
    from core.training.feature_cache import default_cache
    if a.weights == "none":
        raise ValueError("--weights none: a random body's features compare nothing; use imagenet or a weights file")
    arch = check_arch(a.arch)
    configure_threads()
    device = pick_device(a.device)
    ds = scan_dataset(a.data, a.val_split, a.seed)
    kind = "imagenet" if a.weights == "imagenet" else "file"
    body = build_body(kind, arch, len(ds.classes), device, seed=a.seed, weights_file=a.weights if kind == "file" else None)
    print(f"auditing {len(ds.train)} training and {len(ds.val)} validation photos with {arch} ({body.label})",
          file=sys.stderr, flush=True)
    report = audit(ds, body, device, default_cache(), a.seed, progress_printer())
    print(json.dumps({**report.to_json(), "device": str(device), "skipped": len(ds.skipped)}, ensure_ascii=False))
    return 0
