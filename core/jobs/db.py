"""The queue's record on disk: every job as it is submitted, starts, moves on a run and ends.

SQLite from the standard library: one file, transactions that survive a SIGKILL at any
instant (the journal rolls a half-written change back), safe across the server's
threads, and nothing to install or start.  The queue writes a row at each transition,
never per batch; a server that starts again reads the jobs that were waiting or running
and puts them back in line in the order they were submitted (``queue.py``).

A row holds what is needed to run the job again (``spec``: each run's label, experiment
config and image counts, or a data-efficiency sweep's plan) and what has happened so far
(``state``: each run's status, saved run folder, accuracy, error, a sweep's result).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order: the line's order after a restart
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,                    -- queued | running | done | stopped | error
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,     -- how many server restarts interrupted it
    note TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""
KEEP_FINISHED = 2000         # finished jobs kept for their owners' pages; older ones are pruned
ACTIVE = ("queued", "running")


class JobStore:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection shared by the server's threads under a lock: writes are a few per
        # job, so serialising them costs nothing, and SQLite's own locking then never waits.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")   # readers never block the writer
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a SIGKILL loses nothing committed
            self._db.executescript(SCHEMA)

    def _write(self, sql: str, args=()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def add(self, job_id: str, owner: str, kind: str, title: str, created: float, spec: dict, state: list) -> None:
        self._write("INSERT INTO jobs (id, owner, kind, title, status, created, spec, state) VALUES (?,?,?,?,?,?,?,?)",
                    (job_id, owner, kind, title, "queued", created, json.dumps(spec), json.dumps(state)))

    def started(self, job_id: str, when: float) -> None:
        self._write("UPDATE jobs SET status='running', started=? WHERE id=?", (when, job_id))

    def progress(self, job_id: str, state: list) -> None:
        self._write("UPDATE jobs SET state=? WHERE id=?", (json.dumps(state), job_id))

    def stop_requested(self, job_id: str) -> None:
        self._write("UPDATE jobs SET stop_requested=1 WHERE id=?", (job_id,))

    def ended(self, job_id: str, status: str, when: float, state: list) -> None:
        self._write("UPDATE jobs SET status=?, finished=?, state=? WHERE id=?", (status, when, json.dumps(state), job_id))

    def requeued(self, job_id: str, restarts: int, note: str) -> None:
        self._write("UPDATE jobs SET status='queued', restarts=?, note=? WHERE id=?", (restarts, note, job_id))

    def rows(self, active_only: bool = False) -> list[dict]:
        """Jobs in submission order, ``spec`` and ``state`` decoded."""
        with self._lock:
            where = f"WHERE status IN {ACTIVE}" if active_only else ""
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            try:
                d["spec"], d["state"] = json.loads(d["spec"]), json.loads(d["state"])
            except ValueError:
                continue  # a row damaged by hand: skipped, never fatal to the server
            out.append(d)
        return out

    def prune(self, keep: int = KEEP_FINISHED, older_than_s: float = 30 * 86400) -> None:
        """Forget finished jobs beyond the newest ``keep`` or older than a month (their runs stay on disk)."""
        cutoff = time.time() - older_than_s
        self._write(f"DELETE FROM jobs WHERE status NOT IN {ACTIVE} AND (finished < ? OR seq NOT IN "
                    f"(SELECT seq FROM jobs WHERE status NOT IN {ACTIVE} ORDER BY seq DESC LIMIT ?))", (cutoff, keep))

    def delete_owner(self, owner: str) -> None:
        self._write(f"DELETE FROM jobs WHERE owner=? AND status NOT IN {ACTIVE}", (owner,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
