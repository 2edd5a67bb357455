"""One server-wide training queue: any number of tabs press Start, jobs run in order.

A job is one or more runs (transfer vs scratch is three) started by one owner (a
browser tab).  Jobs wait in a FIFO queue and run on ``concurrency`` worker threads: two on
a GPU, one elsewhere (``default_concurrency``).

What jobs never share: models (each run builds its own), traced or folded copies
(``models/inference.py`` works on private copies), stop signals.  What they do share, read-only
and by design: the frozen-feature cache and the speed book that feeds the estimates.
A run that raises is recorded as that run's error; its job goes on to the next run,
and no other job notices.  ``run_experiment`` leaves no half-written run on disk.

A job of kind "lr_find" is a learning-rate sweep (``run_lr_find``) instead of runs: it
waits in the same line (it trains, and would otherwise share the cores), saves nothing,
and keeps its result dict on the job for the page that asked.

A job of kind "data_efficiency" runs the points of a sweep (``data_efficiency.py``) in
order, each a saved run on its subset; the sweep's summary is rewritten after each point
and closed when the job ends, stopped or not.

With a ``JobStore`` (``db.py``) every job is recorded as it is submitted, starts, finishes
a run and ends.  A queue that starts on the same database puts the jobs a killed server
left waiting or running back in line, in their order, before its workers start: a run
that was cut short restarts from its first epoch (its partial folder is removed by the
server's start-up), the runs of the job that had finished stay done, and the job says
it was resumed.  Every job belongs to an owner (``core/access.py``): only the owner or
the operator stops it.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

from core.access import Viewer
from core.device import worker_stream
from core.errors import TransferLabError
from core.jobs.db import JobStore
from core.jobs.estimates import SpeedBook, feature_signature, sweep_iters, sweeps_frozen, uses_frozen_path
from core.training.experiment import run_experiment, run_lr_find
from core.jobs.progress import PointProgress, RunProgress, SweepProgress
from core.training import data_efficiency

MIN_IMAGES_TO_LEARN = 64  # images a phase must have covered for its rate to teach the speed book
KINDS = ("train", "lr_find", "data_efficiency")


@dataclass
class Job:
    id: str
    owner: str
    title: str
    runs: list[RunProgress]
    created: float = field(default_factory=time.time)
    status: str = "queued"            # queued | running | done | stopped | error
    started: float | None = None
    finished: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    kind: str = "train"               # train | lr_find | data_efficiency
    sweep: object = None              # data_efficiency: the Sweep whose points ``runs`` follow
    note: str = ""                    # "resumed after a server restart: ..." for its owner's page
    restarts: int = 0

    @property
    def result(self) -> dict | None:
        """An lr_find job's sweep (``run_lr_find``'s dict) once it ended, else None."""
        return getattr(self.runs[0], "result", None) if self.runs else None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def current(self) -> RunProgress | None:
        return next((r for r in self.runs if r.status in ("preparing", "running")), None)

    def remaining_seconds(self, book: SpeedBook, device: str, cached: set) -> float:
        return sum(r.remaining_seconds(book, device, feature_signature(r.config) in cached) for r in self.runs
                   if r.status in ("queued", "preparing", "running"))


def default_concurrency(device: str) -> int:
    """Two jobs at once on a GPU, each on a CUDA stream of its own: a frozen run or a small
    batch leaves most of a GPU idle.  Each run draws its crops, shuffles and dropout masks
    from its own generators (``training/run_random.py``), so a run next to another job is
    the same run as alone.  One on a CPU or MPS, where two jobs would only share the cores."""
    return 2 if device == "cuda" else 1


class TrainingQueue:
    def __init__(self, concurrency: int | None = None, device: str | None = None, runner=run_experiment,
                 lr_finder=run_lr_find, store: JobStore | None = None, nice: int = 0):
        from core.device import pick_device
        self.device = device or pick_device("auto").type
        self.concurrency = concurrency or default_concurrency(self.device)
        self.book = SpeedBook()
        self.runner, self.lr_finder = runner, lr_finder
        self.jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []
        self._cond = threading.Condition()
        self.store, self.nice = store, nice
        if store is not None:
            from core.jobs import restore
            restore.into(self, store)  # before the workers start: the line is whole when they look
        self._workers = [threading.Thread(target=self._work, name=f"train-worker-{k}", daemon=True)
                         for k in range(self.concurrency)]
        for w in self._workers:
            w.start()

    # ---- submitting and looking ------------------------------------------------------
    def submit(self, owner: str, title: str, runs: list[tuple], kind: str = "train") -> Job:
        """``runs``: (label, ExperimentConfig[, num_train, num_val]) per run, in order; for
        ``kind="lr_find"`` the one setup to sweep."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}: use {', '.join(KINDS)}")
        if kind == "data_efficiency":
            raise ValueError("a data-efficiency sweep is submitted with submit_sweep")
        if kind == "lr_find":
            progress = [SweepProgress(label, cfg, *counts, iters=sweep_iters(cfg)) for label, cfg, *counts in runs[:1]]
        else:
            progress = [RunProgress(label, cfg, *counts) for label, cfg, *counts in runs]
        return self._enqueue(Job(uuid.uuid4().hex[:10], owner, title, progress, kind=kind))

    def submit_sweep(self, owner: str, title: str, sweep) -> Job:
        """A data-efficiency sweep (``data_efficiency.plan``): one run per point, in order."""
        return self._enqueue(Job(uuid.uuid4().hex[:10], owner, title, self._point_progress(sweep),
                                 kind="data_efficiency", sweep=sweep))

    def estimate_sweep(self, sweep) -> float:
        """Seconds the whole sweep would take if it started now."""
        cached = set(self.book.features_done)
        return sum(r.remaining_seconds(self.book, self.device, feature_signature(r.config) in cached)
                   for r in self._point_progress(sweep))

    @staticmethod
    def _point_progress(sweep) -> list[PointProgress]:
        out, frozen_seen = [], False
        for p in sweep.points:
            first_frozen = p.arm == "frozen" and not frozen_seen
            frozen_seen |= p.arm == "frozen"
            out.append(PointProgress(p.label, p.config, len(sweep.dataset.train) if first_frozen else len(p.train_list),
                                     len(sweep.dataset.val), features_shared=p.arm == "frozen" and not first_frozen))
        return out

    def _enqueue(self, job: Job) -> Job:
        if self.store is not None:
            from core.jobs import restore
            self.store.add(job.id, job.owner, job.kind, job.title, job.created, restore.spec_of(job), restore.state_of(job))
        with self._cond:
            self.jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
        return job

    def of(self, owner: str) -> list[Job]:
        with self._cond:
            mine = [j for j in self.jobs.values() if j.owner == owner]
        return sorted(mine, key=lambda j: j.created, reverse=True)

    def get(self, job_id: str | None, owner: str) -> Job | None:
        job = self.jobs.get(job_id) if job_id else None
        return job if job is not None and job.owner == owner else None

    def position(self, job: Job) -> int:
        """1 for the next job to start, 2 for the one after…; 0 once it runs."""
        with self._cond:
            waiting = [j for j in self._waiting if not j.stop_event.is_set()]
        return waiting.index(job) + 1 if job in waiting else 0

    def wait_seconds(self, job: Job) -> float:
        """Estimated seconds until ``job`` starts: running jobs finish, then the ones ahead
        take the earliest free worker in turn."""
        with self._cond:
            running = [j for j in self.jobs.values() if j.status == "running"]
            ahead = []
            for j in self._waiting:
                if j is job:
                    break
                if not j.stop_event.is_set():
                    ahead.append(j)
        cached = set(self.book.features_done)
        slots = sorted(j.remaining_seconds(self.book, self.device, cached) for j in running)
        slots += [0.0] * (self.concurrency - len(slots))
        for j in ahead:
            # A job ahead with the same features computes them; this one will then hit.
            slots.sort()
            slots[0] += j.remaining_seconds(self.book, self.device, cached)
            cached |= {feature_signature(r.config) for r in j.runs
                       if (sweeps_frozen(r.config) if j.kind == "lr_find" else uses_frozen_path(r.config))}
        return min(slots) if job.status == "queued" else 0.0

    def eta_seconds(self, job: Job) -> float:
        """Seconds until the whole job is done, waiting included."""
        cached = set(self.book.features_done)
        return self.wait_seconds(job) + job.remaining_seconds(self.book, self.device, cached)

    def estimate(self, cfg, num_train: int, num_val: int, kind: str = "train") -> float:
        """Seconds one run (or sweep) of ``cfg`` would take if it started now, waiting not
        included: what a page can say before the button is pressed."""
        r = (SweepProgress("estimate", cfg, num_train, num_val, iters=sweep_iters(cfg)) if kind == "lr_find"
             else RunProgress("estimate", cfg, num_train, num_val))
        return r.remaining_seconds(self.book, self.device, feature_signature(cfg) in self.book.features_done)

    def stop(self, job: Job, viewer: Viewer | None = None) -> None:
        """Stop a job: a waiting one is taken out of the line at once, a running one ends
        within a batch in whatever phase it is.  With ``viewer``, only the job's owner or
        the operator may (``AccessError`` otherwise)."""
        if viewer is not None:
            viewer.require_change(job.owner, f"job {job.title!r}")
        with self._cond:
            job.stop_event.set()
            ended = job in self._waiting
            if ended:
                self._waiting.remove(job)
                for r in job.runs:
                    r.status, r.stop_phase = "stopped", "queued"
                job.status, job.finished = "stopped", time.time()
        if self.store is not None:
            from core.jobs import restore
            if ended:
                self.store.ended(job.id, job.status, job.finished, restore.state_of(job))
            else:
                self.store.stop_requested(job.id)

    def progress(self, job: Job) -> float:
        """Share of the job done, in time: elapsed / (elapsed + remaining).  Moves through
        the preparation too, where counting epochs would sit at zero."""
        if not job.active:
            return 1.0
        if job.status == "queued" or not job.started:
            return 0.0
        elapsed = time.time() - job.started
        left = job.remaining_seconds(self.book, self.device, set(self.book.features_done))
        return min(1.0, elapsed / max(elapsed + left, 1e-9))

    # ---- the workers ---------------------------------------------------------------
    def _next(self) -> Job:
        with self._cond:
            while not self._waiting:
                self._cond.wait()
            job = self._waiting.pop(0)
            job.status = "running" if not job.stop_event.is_set() else "stopped"
            return job

    def _work(self) -> None:
        if self.nice:
            # Linux keeps a nice value per thread, inherited by the threads it starts (torch's
            # OpenMP team for this worker): pages drawn meanwhile then get the cores first,
            # and training takes whatever they leave, which on an idle server is all of it.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):  # not Linux, or not allowed: the same, just less polite
                pass
        with worker_stream(self.device):
            self._serve()

    def _serve(self) -> None:
        while True:
            job = self._next()
            job.started = time.time()
            self._record("started", job)
            try:
                self._run_job(job)
            except Exception:  # noqa: BLE001 - never lose the worker thread (a sweep's summary write, a bug)
                job.status = "error"
                for r in job.runs:
                    if r.status in ("queued", "preparing", "running"):
                        r.status, r.error, r.trace = "error", "the job failed unexpectedly", traceback.format_exc()
            finally:
                job.finished = time.time()
                self._record("ended", job)

    def _record(self, what: str, job: Job) -> None:
        """Write a transition to the database; a full or read-only disk must not stop training."""
        if self.store is None:
            return
        from core.jobs import restore
        try:
            if what == "started":
                self.store.started(job.id, job.started)
            elif what == "progress":
                self.store.progress(job.id, restore.state_of(job))
            else:
                self.store.ended(job.id, job.status, job.finished, restore.state_of(job))
        except Exception:  # noqa: BLE001 - sqlite3.OperationalError (disk full, locked), OSError
            import logging
            logging.getLogger("transferlab").exception("could not record job %s (%s)", job.id, what)

    def _run_job(self, job: Job) -> None:
        for k, r in enumerate(job.runs):
            if r.status in ("done", "error") or (r.status == "stopped" and r.finished):
                continue  # finished before a server restart: kept as it was
            if job.stop_event.is_set():
                r.status, r.stop_phase = "stopped", r.stop_phase or ("queued" if r.started is None else r.stop_phase)
                continue
            r.begin()
            r.on_measured = self._learn_rates
            self._record("progress", job)  # a restart then knows this run was cut short, and says so
            try:
                if job.kind == "lr_find":
                    self._sweep(r, job.stop_event)
                    continue
                if job.kind == "data_efficiency":
                    run_dir, result, _ = data_efficiency.run_point(job.sweep, job.sweep.points[k], [r], job.stop_event,
                                                                   self.runner)
                else:
                    run_dir, result, _ = self.runner(r.config, [r], stop=job.stop_event)
                r.run_dir = str(run_dir) if run_dir else None
                r.best_val_acc = result.best_val_acc if result.history else None
                r.stop_phase = result.stop_phase
                r.status = "stopped" if result.stopped else "done"
                r.path = result.path  # "frozen-features, then plain" for a schedule that unfroze
                self._learn(r, result)
            except TransferLabError as e:
                r.status, r.error = "error", str(e)
            except Exception as e:  # a bug: this run fails, the server and every other job go on
                r.status, r.error = "error", f"{type(e).__name__}: {e}"
                r.trace = traceback.format_exc()
            finally:
                r.finished = time.time()
                self._record("progress", job)
        states = {r.status for r in job.runs}
        status = "error" if "error" in states else "stopped" if "stopped" in states else "done"
        if job.kind == "data_efficiency":
            try:
                data_efficiency.finish(job.sweep, "stopped" if job.stop_event.is_set() else status)
            except OSError:
                pass  # a full disk: the points are saved runs; only the summary's last word is lost
        job.status = status  # last: a page that sees the job ended reads the sweep's final summary

    def _sweep(self, r: SweepProgress, stop: threading.Event) -> None:
        """One learning-rate sweep (errors are caught by ``_run_job`` like a run's)."""
        r.result = self.lr_finder(r.config, [r], stop=stop, iters=r.iters)
        r.path = r.result.get("path", "")
        r.feature_hits = r.result.get("feature_hits", 0)
        r.status = "stopped" if r.result.get("stopped") else "done"
        self._learn(r, None)
        if r.path == "frozen-features" and r.result.get("iters"):  # it got past the features: they are cached
            self.book.features_done.add(feature_signature(r.config))

    def _learn_rates(self, r: RunProgress) -> None:
        """Feed the run's measured rates to the speed book, each measurement once (an epoch's
        end feeds its training rate; the run's end the rest)."""
        for kind, (n, secs) in list(r.measured.items()):
            # A phase of a few images is mostly fixed cost (a 10-photo dataset "decoded" at
            # 1 img/s): learning a rate from it made every later estimate hours long.
            if secs > 0.5 and n >= MIN_IMAGES_TO_LEARN and r.learnt.get(kind) != (n, secs):
                r.learnt[kind] = (n, secs)
                self.book.record(r.config.arch, self.device, kind, n / secs)

    def _learn(self, r: RunProgress, result) -> None:
        """Feed the run's measured rates to the speed book."""
        arch, dev, book = r.config.arch, self.device, self.book
        self._learn_rates(r)
        if result is not None and result.path.startswith("frozen-features"):
            book.features_done.add(feature_signature(r.config))
            head = [h["seconds"] for h in result.history if h.get("path", "frozen-features") == "frozen-features"]
            if head:
                book.record(arch, dev, "head_epoch", sum(head) / len(head))
