"""Batches made ahead on a background thread, so a GPU is not kept waiting for the CPU.

The training thread otherwise crops, flips, normalises and pins each batch itself, then
launches the GPU's work for it: the GPU idles while the CPU prepares the next batch.
Here a producer thread prepares up to ``depth`` batches ahead (torch's CPU ops and
Pillow release the GIL).  Used on CUDA only: on a CPU both cores already compute, and
the producer's crops would draw from torch's global CPU generator while dropout draws
from it on the training thread, so two runs of one seed would differ.  On CUDA, dropout
draws from the GPU's generator and the producer is the only user of the CPU's, so a seed
still means one sequence: the producer starts at the first batch, after the trainer
seeded the epoch.

Errors in the producer reach the consumer at the batch where they happened; a consumer
that stops early (a stop request, an error of its own) ends the producer.
"""
from __future__ import annotations

import queue
import threading

_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(batches, depth: int = 2):
    """Iterate ``batches`` with up to ``depth`` items prepared ahead on another thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    closed = threading.Event()

    def offer(item) -> bool:
        while not closed.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in batches:
                if not offer(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            offer(_Failed(e))
            return
        offer(_END)

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        closed.set()
        worker.join(timeout=5)
