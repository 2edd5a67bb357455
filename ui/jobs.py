"""The server's one training queue (``core/jobs/queue.py``), held for the life of the process.

One object per server process, made at start-up (``ui/server.py``) or by the first page
that asks: jobs survive page switches, refreshes and closed tabs, and with its database
(``<data dir>/queue.sqlite3``) a server restart too.  Each job belongs to the owner of
the workspace that started it; a tab sees only its own jobs (the operator sees all).

A plain module global, not ``st.cache_resource``: the operator's "clear caches" must
never drop the queue with the jobs in it.
"""
from __future__ import annotations

import threading

from core import paths
from core.jobs.db import JobStore
from core.jobs.queue import TrainingQueue

# Training yields the cores to page runs (a fresh tab, a click) on a shared server.
TRAINING_NICE = 10
_LOCK = threading.Lock()
_QUEUE: TrainingQueue | None = None


def training_queue() -> TrainingQueue:
    global _QUEUE
    with _LOCK:
        if _QUEUE is None:
            _QUEUE = TrainingQueue(store=JobStore(paths.DEFAULT_DATA_DIR / "queue.sqlite3"), nice=TRAINING_NICE)
        return _QUEUE
