"""Does an exported model compute what the PyTorch model computes?

Both get the same normalised batches: the run's validation images through its
evaluation transform (the photos the run was judged on), else, when those images are
not on this machine (an imported bundle), seeded random inputs, and the report says so.
Two numbers decide: the largest absolute logit difference and the share of images whose
top-1 class agrees.  fp32 exports must agree on every image and stay within
``TOLERANCE`` of the largest logit's size (at least 1): a trained head's logits are a
few units, so that is 1e-3 absolute; a randomly initialised Inception's reach 1e7, where
fp32 itself cannot promise 1e-3.  Anything else is a failed export, whatever the cause.
"""
from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import torch

from core.data.images import ImageReadError, load_rgb
from core.data.transforms import eval_transform
from core.serving.predict import checked_config

TOLERANCE = 1e-3       # max |logit difference| for an fp32 export
SYNTHETIC = 32         # inputs used when the validation images are absent
BATCH = 32
_kept: dict = {}
_kept_lock = threading.Lock()


def validation_batches(run: dict, max_images: int | None = None, batch: int = BATCH):
    """Normalised float32 batches of the run's validation images that are still readable."""
    split = run.get("split") or {}
    root, items = split.get("root"), split.get("val") or []
    if not root or not Path(root).is_dir():
        return
    spec = checked_config(run)[1]
    transform = eval_transform(spec)
    chunk, seen = [], 0
    for entry in items:
        if max_images is not None and seen >= max_images:
            break
        if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
            continue
        try:
            # JPEG draft decoding: both models get the same pixels, so it costs parity nothing
            chunk.append(transform(load_rgb(Path(root) / entry[0], draft_size=spec.resize_size)))
        except (ImageReadError, OSError):
            continue
        seen += 1
        if len(chunk) == batch:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


def synthetic_batches(run: dict, n: int = SYNTHETIC, batch: int = BATCH):
    size = checked_config(run)[1].crop_size
    g = torch.Generator().manual_seed(0)
    for start in range(0, n, batch):
        yield torch.randn(min(batch, n - start), 3, size, size, generator=g)


@torch.inference_mode()
def check_parity(run: dict, model: torch.nn.Module, runner, max_images: int | None = None,
                 tolerance: float = TOLERANCE) -> dict:
    """Compare ``runner`` (float32 NCHW numpy batch -> logits) with ``model`` (eager, eval,
    fp32 on the CPU) on the same inputs."""
    images, agree, worst, scale = 0, 0, 0.0, 1.0
    source, pairs = _reference(run, model, max_images)
    for x, ref in pairs:
        got = np.asarray(runner(x.numpy().astype(np.float32)), dtype=np.float32)
        if got.shape != ref.shape:
            return _report(images, 0, float("inf"), source, tolerance,
                           f"output shape {tuple(got.shape)} instead of {tuple(ref.shape)}")
        worst = max(worst, float(np.abs(got - ref).max()) if got.size else 0.0)
        scale = max(scale, float(np.abs(ref).max()) if ref.size else 0.0)
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        images += len(x)
    return _report(images, agree, worst, source, tolerance * scale)


def _reference(run: dict, model: torch.nn.Module, max_images: int | None):
    """(where the inputs came from, [(batch, PyTorch logits)]).  The last run's pairs are
    kept: exporting one run to three formats decodes its photos and runs the model once."""
    weights = Path(run["dir"]) / "weights.safetensors"
    key = (str(Path(run["dir"]).resolve()), weights.stat().st_mtime_ns if weights.exists() else 0, max_images)
    with _kept_lock:
        if _kept.get("key") == key:
            return _kept["value"]
    model = model.eval().to(memory_format=torch.channels_last)  # the fast layout on CPUs; same numbers to ~1e-6
    batches = validation_batches(run, max_images)
    first = next(batches, None)
    if first is None:
        source, stream = "random inputs (the run's validation images are not on this machine)", synthetic_batches(run)
    else:
        source, stream = "validation images", itertools.chain([first], batches)
    pairs = [(x, model(x.contiguous(memory_format=torch.channels_last)).float().numpy()) for x in stream]
    with _kept_lock:
        _kept.update(key=key, value=(source, pairs))
    return source, pairs


def _report(images: int, agree: int, worst: float, source: str, tolerance: float, problem: str | None = None) -> dict:
    top1 = agree / images if images else 0.0
    ok = problem is None and images > 0 and agree == images and np.isfinite(worst) and worst <= tolerance
    summary = problem or (f"top-1 agreement {top1:.1%} on {images} {source.split(' (')[0]}, "
                          f"max |Δlogit| {worst:.2e} (tolerance {tolerance:.1e})")
    return {"ok": bool(ok), "images": images, "input_source": source, "top1_agreement": top1,
            "max_abs_logit_diff": worst if np.isfinite(worst) else None, "tolerance": tolerance, "summary": summary}
