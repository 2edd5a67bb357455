"""Choosing the micro-batch: the optimiser step stays at ``batch_size``, the forward and
backward passes run on slices of it when that is faster.

Why: on a small CPU a convolutional network trains faster per image on small batches,
whose activations stay in cache.  MobileNetV2 on a 2-core AMD EPYC (AVX2, no AVX-512):
14 img/s at batch 32, 25 at 16, 22 at 8.  How much depends on the CPU (cache sizes,
AVX-512), so the size is *measured*, once per machine, architecture and trainable set,
and remembered in ``data/speed/micro_batch.json``.

What it changes: gradients are accumulated over the slices and the optimiser steps once
per batch, so the step (and its learning rate) is the one of ``batch_size``.  BatchNorm
is the exception: in training mode it normalises each slice with that slice's own
statistics (a micro-batch of 16 instead of 32: slightly noisier, a mild regulariser),
and its running statistics are updated once per slice.  Frozen BatchNorm layers (eval
mode, see ``surgery.train_mode``) are untouched.  Slices of 8 cost accuracy on ants/bees
(fine_tune, best val 0.954 at slices of 32, 0.935 at 8), so slices never go below 16.
GPUs keep the whole batch.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

import torch
from torch import nn

from core import paths
from core.device import cpu_facts
from core.models.surgery import train_mode

MIN_MICRO = 16          # BatchNorm statistics over fewer images cost accuracy (see module docstring)
TIMED_IMAGES = 16       # images timed per candidate, after one warm-up step
_lock = threading.Lock()


def _store():
    # TRANSFERLAB_SPEED: one measurement shared by processes whose data folders differ (the tests).
    folder = os.environ.get("TRANSFERLAB_SPEED") or paths.DEFAULT_DATA_DIR / "speed"
    return Path(folder) / "micro_batch.json"


def candidates(batch_size: int) -> list[int]:
    """The batch itself, then halves down to ``MIN_MICRO``."""
    out, c = [batch_size], batch_size // 2
    while c >= MIN_MICRO:
        out.append(c)
        c //= 2
    return out


def machine_key(model: nn.Module, batch_size: int, crop: int, amp: bool) -> str:
    cpu = cpu_facts()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flags = "".join("1" if v else "0" for k, v in cpu.items() if k not in ("model", "threads"))
    return (f"{cpu['model']}|{flags}|{cpu['threads']}t|torch {torch.__version__}|{type(model).__name__}"
            f"|{trainable}|{crop}px|batch {batch_size}|amp {int(amp)}")


def _rate(model: nn.Module, size: int, crop: int, num_classes: int, autocast) -> float:
    """Training images/s (forward + backward, no step) at one micro-batch size."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(size, 3, crop, crop, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (size,), generator=g)
    steps = max(1, -(-TIMED_IMAGES // size))
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        with autocast():
            out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        nn.functional.cross_entropy(out.float(), y).backward()
    return size * steps / (time.perf_counter() - t)


def choose(model: nn.Module, device: torch.device, batch_size: int, crop: int, num_classes: int,
           autocast, amp: bool = False) -> tuple[int, dict]:
    """(micro-batch size, {size: measured img/s}) for training ``model`` as it is now frozen.

    Measured on a private copy with synthetic data, so the model, its BatchNorm statistics
    and torch's global RNG are untouched; remembered per machine key."""
    if device.type != "cpu" or batch_size <= MIN_MICRO:
        return batch_size, {}
    key = machine_key(model, batch_size, crop, amp)
    with _lock:  # two runs starting together measure once, and not against each other
        book = _load()
        if key in book:
            return int(book[key]["micro"]), book[key]["rates"]
        probe = train_mode(copy.deepcopy(model)).to(memory_format=torch.channels_last)
        rates = {c: _rate(probe, c, crop, num_classes, autocast) for c in candidates(batch_size)}
        del probe
        best = max(rates, key=rates.get)
        # Keep the whole batch unless slicing is clearly faster (noise is a few percent).
        micro = best if rates[best] > 1.1 * rates[batch_size] else batch_size
        book[key] = {"micro": micro, "rates": {str(k): round(v, 2) for k, v in rates.items()}}
        _save(book)
    return micro, book[key]["rates"]


def _load() -> dict:
    try:
        data = json.loads(_store().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(book: dict) -> None:
    path = _store()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(book, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only data folder: measure again next time, train all the same
