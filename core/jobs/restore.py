"""A job as a database row and back: what ``queue.py`` records, and the line a restarted
server rebuilds from it.

``spec_of`` is what running the job again needs (each run's label, experiment config and
image counts; for a data-efficiency sweep its plan's arguments, since its subsets are
re-drawn from the dataset with the same seeds); ``state_of`` is what happened so far.
``into`` puts a killed server's waiting and running jobs back in line, in submission
order, and keeps recently finished ones so their owners' pages still show them.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from core.jobs.estimates import sweep_iters
from core.jobs.progress import PointProgress, RunProgress, SweepProgress
from core.runs.store import read_json
from core.training.experiment import ExperimentConfig

log = logging.getLogger("transferlab")
RUN_STATE = ("status", "run_dir", "best_val_acc", "error", "stop_phase", "path", "started", "finished",
             "prep_seconds", "feature_hits")
SHOWN_FINISHED = 500   # finished jobs brought back for their owners' pages


def spec_of(job) -> dict:
    runs = [{"label": r.label, "config": r.config.to_dict(), "num_train": r.num_train, "num_val": r.num_val,
             **({"features_shared": r.features_shared} if isinstance(r, PointProgress) else {})} for r in job.runs]
    spec = {"runs": runs}
    if job.kind == "data_efficiency":
        sw = job.sweep
        spec["sweep"] = {"id": sw.id, "base": sw.base.to_dict(), "ns": sw.ns, "seeds": len(sw.seeds), "arms": sw.arms,
                         "repeat": sw.repeat, "runs_dir": str(sw.runs_dir), "dropped_ns": sw.dropped_ns}
    return spec


def state_of(job) -> list[dict]:
    out = []
    for r in job.runs:
        d = {k: getattr(r, k) for k in RUN_STATE}
        if isinstance(r, SweepProgress):
            d["result"] = r.result
        out.append(d)
    return out


def _runs_of(kind: str, spec: dict, state: list) -> list[RunProgress]:
    runs = []
    for k, s in enumerate(spec["runs"]):
        cfg = ExperimentConfig.from_dict(s["config"])
        if kind == "lr_find":
            r = SweepProgress(s["label"], cfg, s["num_train"], s["num_val"], iters=sweep_iters(cfg))
        elif kind == "data_efficiency":
            r = PointProgress(s["label"], cfg, s["num_train"], s["num_val"], features_shared=s.get("features_shared", False))
        else:
            r = RunProgress(s["label"], cfg, s["num_train"], s["num_val"])
        saved = state[k] if k < len(state) and isinstance(state[k], dict) else {}
        for key in RUN_STATE:
            if key in saved:
                setattr(r, key, saved[key])
        if isinstance(r, SweepProgress):
            r.result = saved.get("result")
        runs.append(r)
    return runs


def _history(run_dir: str | None) -> list:
    try:
        h = read_json(Path(run_dir) / "history.json") if run_dir else []
    except (OSError, ValueError):
        return []
    return h if isinstance(h, list) else []


def _sweep_of(spec: dict, runs: list[RunProgress]):
    """The data-efficiency sweep re-planned from its arguments (same seeds: the same
    subsets), its finished points marked from the summary it saved."""
    from core.data.datasets import scan_dataset
    from core.training import data_efficiency as de
    s = spec["sweep"]
    base = ExperimentConfig.from_dict(s["base"])
    dataset = scan_dataset(base.data, base.val_split, base.train.seed)
    sweep = de.plan(base, dataset, s["ns"], s["seeds"], s["arms"], runs_dir=s["runs_dir"], sweep_id=s["id"],
                    repeat=s["repeat"])
    sweep.dropped_ns = s.get("dropped_ns", [])
    if len(sweep.points) != len(runs):
        raise ValueError("the dataset changed since the sweep was planned")
    for p, r in zip(sweep.points, runs):
        if r.status == "done":
            p.status, p.run, p.best_val_acc = "done", Path(r.run_dir).name if r.run_dir else None, r.best_val_acc
    return sweep


def into(queue, store) -> None:
    """Load the recorded jobs into ``queue`` (its workers not started yet)."""
    from core.jobs.queue import Job
    rows = store.rows()
    finished = [r for r in rows if r["status"] not in ("queued", "running")][-SHOWN_FINISHED:]
    for row in finished + [r for r in rows if r["status"] in ("queued", "running")]:
        try:
            runs = _runs_of(row["kind"], row["spec"], row["state"])
        except (KeyError, TypeError, ValueError) as e:  # a row from another version, or edited by hand
            log.warning("job %s could not be restored: %s", row["id"], e)
            continue
        job = Job(row["id"], row["owner"], row["title"], runs, created=row["created"], status=row["status"],
                  started=row["started"], finished=row["finished"], kind=row["kind"], note=row["note"] or "",
                  restarts=row["restarts"], stop_event=threading.Event())
        if row["status"] not in ("queued", "running"):
            for r in runs:
                r.history = _history(r.run_dir)
            queue.jobs[job.id] = job
            continue
        interrupted = [r for r in runs if r.status in ("preparing", "running")]
        for r in interrupted:  # cut short by the restart: it runs again from its first epoch
            r.status, r.started, r.finished, r.run_dir, r.best_val_acc, r.error = "queued", None, None, None, None, None
        for r in runs:
            if r.status == "done":
                r.history = _history(r.run_dir)
        if row["status"] == "running":
            job.restarts += 1
            again = f"; {', '.join(r.label for r in interrupted)} restarted from its first epoch" if interrupted else ""
            job.note = f"resumed after a server restart{again}"
        else:
            job.note = job.note or "still in line after a server restart"
        job.status, job.started, job.finished = "queued", None, None
        if row["stop_requested"]:
            job.stop_event.set()  # the owner pressed Stop before the restart: it ends at once
        if job.kind == "data_efficiency":
            try:
                job.sweep = _sweep_of(row["spec"], runs)
            except Exception as e:  # noqa: BLE001 - the dataset moved or changed: say so on the job
                for r in runs:
                    if r.status == "queued":
                        r.status, r.error = "error", f"could not be resumed after a server restart: {e}"
                job.status, job.finished = "error", time.time()
                store.ended(job.id, "error", job.finished, state_of(job))
                queue.jobs[job.id] = job
                continue
        store.requeued(job.id, job.restarts, job.note)
        queue.jobs[job.id] = job
        queue._waiting.append(job)
    store.prune()
