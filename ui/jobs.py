"""Training in the background, outside the page's script run.

A job is a thread that runs one or more experiments (the transfer-vs-scratch demo runs
three, one after another: two cores shared by three runs would make all of them slow).
The registry lives in ``st.cache_resource``: one per server process, so a job survives
page switches and browser refreshes; each job belongs to the tab (session id) that
started it, and a tab only sees its own jobs in progress.  Finished runs are on disk.
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

import streamlit as st

from core.errors import TransferLabError
from core.experiment import ExperimentConfig, run_experiment


@dataclass
class RunProgress:
    label: str
    config: ExperimentConfig
    history: list[dict] = field(default_factory=list)
    status: str = "queued"            # queued | preparing | running | done | stopped | error
    epoch: int = 0
    batch: int = 0
    batches: int = 0
    phase: str = ""
    path: str = ""
    run_dir: str | None = None
    error: str | None = None
    best_val_acc: float | None = None
    started: float | None = None
    finished: float | None = None
    prep_seconds: float = 0.0

    @property
    def elapsed(self) -> float:
        return ((self.finished or time.time()) - self.started) if self.started else 0.0


class _Listener:
    """Copies trainer events into a RunProgress the page reads on its next refresh."""

    def __init__(self, progress: RunProgress):
        self.p = progress

    def on_run_start(self, info):
        self.p.status, self.p.path, self.p.batches = "running", info["path"], info["batches_per_epoch"]
        self.p.prep_seconds = info["prep_seconds"]

    def on_batch_end(self, info):
        self.p.phase = info.get("phase", "train")
        self.p.epoch, self.p.batch, self.p.batches = max(info["epoch"], 1), info["batch"], info["batches"]

    def on_epoch_end(self, record):
        self.p.history.append(record)


@dataclass
class Job:
    id: str
    owner: str
    title: str
    runs: list[RunProgress]
    created: float = field(default_factory=time.time)
    stop_requested: bool = False
    trainer: object = None
    thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def current(self) -> RunProgress | None:
        return next((r for r in self.runs if r.status in ("preparing", "running")), None)

    def stop(self) -> None:
        self.stop_requested = True
        if self.trainer is not None:
            self.trainer.request_stop()

    def eta_seconds(self) -> float | None:
        """Remaining time of the current run from its mean epoch time so far."""
        r = self.current
        if not r or not r.history:
            return None
        per_epoch = sum(h["seconds"] for h in r.history) / len(r.history)
        left = r.config.train.epochs - len(r.history) - (r.batch / r.batches if r.batches else 0)
        return max(0.0, left * per_epoch)

    def _work(self) -> None:
        for r in self.runs:
            if self.stop_requested:
                r.status = "stopped"
                continue
            r.status, r.started = "preparing", time.time()
            try:
                run_dir, result, _ = run_experiment(r.config, [_Listener(r)],
                                                    on_trainer=lambda t: setattr(self, "trainer", t))
                r.run_dir = str(run_dir) if run_dir else None
                r.best_val_acc = result.best_val_acc
                r.status = "stopped" if result.stopped else "done"
            except TransferLabError as e:
                r.status, r.error = "error", str(e)
            except Exception as e:  # a bug: keep the server alive, show it on the page
                r.status, r.error = "error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            finally:
                r.finished = time.time()
                self.trainer = None


class JobRegistry:
    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def start(self, owner: str, title: str, runs: list[tuple[str, ExperimentConfig]]) -> Job:
        job = Job(uuid.uuid4().hex[:10], owner, title, [RunProgress(label, cfg) for label, cfg in runs])
        job.thread = threading.Thread(target=job._work, name=f"train-{job.id}", daemon=True)
        with self.lock:
            self.jobs[job.id] = job
        job.thread.start()
        return job

    def of(self, owner: str) -> list[Job]:
        return sorted((j for j in self.jobs.values() if j.owner == owner), key=lambda j: j.created, reverse=True)

    def get(self, job_id: str | None, owner: str) -> Job | None:
        job = self.jobs.get(job_id) if job_id else None
        return job if job is not None and job.owner == owner else None


@st.cache_resource
def registry() -> JobRegistry:
    return JobRegistry()
