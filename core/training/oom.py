"""Running out of GPU memory is a setting to change, not a crash.

``torch.cuda.OutOfMemoryError`` used to leave the trainer as a traceback: the queue
recorded it as a bug, the CLI printed it instead of its one-line error, and the cached
blocks of the failed run stayed with the allocator.  The trainer turns it into
``OutOfMemory``, a ``TransferLabError`` whose message names the batch that did not fit and
what to change, after the failed step's tensors are gone and the cache is emptied: the
queue shows the message as the run's error and starts the next job, the CLI prints one
line and exits 2, as for any bad input.
"""
from __future__ import annotations

import gc

import torch

from core.errors import TransferLabError


class OutOfMemory(TransferLabError):
    """The GPU ran out of memory; the message names the batch size and a smaller one."""


def free_memory() -> None:
    """Return what the failed step held to the GPU (call it once the error is dropped:
    the traceback's frames hold the step's activations)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def message(arch: str, activity: str, batch_size: int, micro: int, infer_bs: int) -> str:
    """What to say for an out-of-memory error while ``activity`` ran."""
    if activity == "training":
        slices = f" (forward/backward on slices of {micro})" if 0 < micro < batch_size else ""
        smaller = max(1, batch_size // 2)
        slice_hint = max(1, (micro if 0 < micro < batch_size else batch_size) // 2)
        return (f"out of GPU memory training {arch} at batch size {batch_size}{slices}: try batch size {smaller}, "
                f"or keep {batch_size} and set the micro-batch to {slice_hint} (forward/backward on {slice_hint} "
                f"images at a time; the optimiser step stays at {batch_size})")
    short = ("the GPU is short of memory for this architecture; free it (another process may hold it) or choose "
             "a smaller architecture")
    if activity in ("validation", "extracting features"):  # eval-mode batches: device.inference_batch_size
        return f"out of GPU memory running {arch} over batches of {infer_bs} images ({activity}): {short}"
    return f"out of GPU memory {activity} {arch}: {short}"
