"""The data-efficiency experiment: best validation accuracy against images per class.

For each n of ``ns`` (images per class, or "all") and each seed, every arm trains on a
seeded, stratified subset of the training split and is validated on the same, whole
validation split.  Arms: ``frozen`` (pretrained body frozen, the head trained),
``scratch`` (the same architecture from random weights, standard schedule) and,
optionally, ``fine_tune`` (pretrained, fastai's recipe).

* Subsets are nested: per class, one seeded shuffle of its images, n takes the first n,
  so n=5 is inside n=10 for a seed and a curve's steps show more data, not another draw.
  A class with fewer than n images gives all it has; an n that covers every class whole
  is the same as "all" and is merged into it (``dropped_ns`` lists it).
* Every point takes the same number of optimiser steps: an epoch is a pass over the
  whole training split's worth of images, the subset repeated (``repeats``, each repeat
  with its own augmentation on the plain path).  With epochs over the subset alone, n=2
  would get 5 steps against 40 for "all" at 5 epochs, and the curve would measure
  steps, not data.  ``repeat=False`` (CLI ``--no-repeat``) trains plain epochs instead.
* Every point is an ordinary saved run (``run_experiment``: Compare and Predict open it),
  its config tagged ``sweep = {"id", "arm", "n", "seed"}``.  The sweep's summary,
  ``<runs>/sweeps/<id>.json``, is rewritten after every point: a stopped sweep leaves its
  finished points saved and a summary that says which they are.
* The frozen arm runs the body once for the whole training split (``FeaturePool``, with
  the first seed's augmentation view) and each point takes its rows: one feature pass for
  the sweep, then seconds per point.  The seed still changes the subset and the head's
  initialisation and shuffling.  Once the features exist, a frozen point trains on one
  thread: a head step is a few tiny operations, and with two threads each one waits on a
  thread barrier (on this shared 2-core machine, at load 8: 125 ms a step against 7).
* Small subsets: the batch is never larger than the subset, and never leaves a batch (or
  a micro-batch slice) of one image, whose BatchNorm statistics would be one photo's.
  BatchNorm is otherwise left as it is: from scratch, a few steps leave its running
  statistics close to their initial values, which is part of why scratch is near chance
  for small n (validation uses the running statistics, as it should).
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core import paths
from core.data.datasets import Dataset
from core.errors import TransferLabError
from core.runs.store import read_json, write_json
from core.training.experiment import ExperimentConfig, run_experiment
from core.training.frozen_path import FeaturePool
from core.training.micro_batch import MIN_MICRO
from core.training.schedules import FINE_TUNE_RECIPE

ARMS = ("frozen", "scratch", "fine_tune")
ARM_LABELS = {"frozen": "pretrained, frozen", "scratch": "from scratch", "fine_tune": "pretrained, fine-tuned"}
DEFAULT_NS = (2, 5, 10, 20, 50, "all")
SWEEPS_DIR = "sweeps"  # under the runs folder; not a run (no summary.json), so never listed as one


def parse_ns(text: str) -> list:
    """"2,5,10,all" -> [2, 5, 10, "all"] (sorted, no repeats)."""
    out = []
    for part in (p.strip().lower() for p in str(text).split(",") if p.strip()):
        if part == "all":
            out.append("all")
        elif part.isdigit() and int(part) >= 1:
            out.append(int(part))
        else:
            raise TransferLabError(f"images per class {part!r} in {text!r}: use whole numbers of 1 or more, or 'all'")
    if not out:
        raise TransferLabError(f"images per class {text!r}: give at least one, e.g. 2,5,10,all")
    return sorted(set(out), key=lambda n: (n == "all", n if n != "all" else 0))


def parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in str(text).split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise TransferLabError(f"arms {text!r}: choose from {', '.join(ARMS)}")
    return list(dict.fromkeys(arms))


def nested_subset(train: list, n, seed: int) -> list:
    """Up to ``n`` images per class ("all": every one), the first n of a per-class seeded
    shuffle (so nested across n), in the training list's own order."""
    if n == "all":
        return list(train)
    keep = set()
    for label in sorted({y for _, y in train}):
        idx = [i for i, (_, y) in enumerate(train) if y == label]
        random.Random(f"{seed}/{label}").shuffle(idx)  # a string seed: stable across Python versions
        keep.update(idx[:n])
    return [s for i, s in enumerate(train) if i in keep]


def point_batch_size(num_train: int, batch_size: int) -> int:
    """No larger than the subset, and no batch or micro-batch slice of a single image."""
    bs = max(1, min(batch_size, num_train))
    while bs > 2:
        last = num_train % bs
        if last != 1 and not (last > MIN_MICRO and last % MIN_MICRO == 1):
            break
        bs -= 1
    return bs


@dataclass
class Point:
    arm: str
    n: object                     # int or "all"
    seed: int
    samples: list
    config: ExperimentConfig
    repeats: int = 1              # the subset, this many times over, is one epoch
    status: str = "queued"        # queued | running | done | stopped | error | not run
    run: str | None = None
    best_val_acc: float | None = None
    best_epoch: int = 0
    epochs: int = 0
    seconds: float = 0.0
    prep_seconds: float = 0.0
    feature_hits: int = 0
    error: str | None = None

    @property
    def train_list(self) -> list:
        return self.samples * self.repeats

    @property
    def label(self) -> str:
        return f"{ARM_LABELS[self.arm]} · n={self.n} · seed {self.seed}"

    def to_dict(self, num_classes: int) -> dict:
        out = {k: getattr(self, k) for k in ("arm", "n", "seed", "status", "run", "best_val_acc", "best_epoch", "epochs",
                                             "seconds", "prep_seconds", "feature_hits", "error")}
        return {**out, "num_train": len(self.samples), "repeats": self.repeats, "images_per_class": len(self.samples) / max(num_classes, 1)}


@dataclass
class Sweep:
    id: str
    dataset: Dataset
    base: ExperimentConfig
    ns: list
    seeds: list[int]
    arms: list[str]
    runs_dir: Path
    points: list[Point] = field(default_factory=list)
    dropped_ns: list = field(default_factory=list)
    repeat: bool = True
    status: str = "queued"
    created: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return self.runs_dir / SWEEPS_DIR / f"{self.id}.json"

    @property
    def pool(self) -> FeaturePool:
        return FeaturePool(self.dataset.train, self.seeds[0])

    def summary(self) -> dict:
        b, k = self.base, len(self.dataset.classes)
        return {"id": self.id, "created": self.created, "status": self.status, "data": str(self.dataset.root),
                "owner": self.base.owner,
                "arch": b.arch, "weights": b.weights, "epochs": b.train.epochs, "batch_size": b.train.batch_size,
                "arms": self.arms, "repeat": self.repeat, "ns": self.ns, "seeds": self.seeds, "dropped_ns": self.dropped_ns,
                "classes": self.dataset.classes, "num_train": len(self.dataset.train), "num_val": len(self.dataset.val),
                "points": [p.to_dict(k) for p in self.points]}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.summary())


def arm_config(base: ExperimentConfig, arm: str) -> ExperimentConfig:
    """The arm's model and schedule on top of the base setup (as Train's transfer vs scratch)."""
    pretrained = base.weights  # plan() refuses "none" for these arms
    if arm == "frozen":
        return dataclasses.replace(base, weights=pretrained, freeze="backbone")
    if arm == "scratch":
        return dataclasses.replace(base, weights="none", freeze="none",
                                   train=dataclasses.replace(base.train, schedule="standard"))
    return dataclasses.replace(base, weights=pretrained, freeze="none",
                               train=dataclasses.replace(base.train, **FINE_TUNE_RECIPE))


def plan(base: ExperimentConfig, dataset: Dataset, ns=DEFAULT_NS, seeds: int = 2, arms=("frozen", "scratch"),
         runs_dir=None, sweep_id: str | None = None, repeat: bool = True) -> Sweep:
    """Every point of the sweep, in the order they run: arm by arm (the frozen arm first:
    its whole curve takes seconds), n ascending, then seed."""
    ns, arms = list(ns), list(arms)
    if not 1 <= seeds <= 10:
        raise TransferLabError(f"seeds {seeds}: use 1 to 10")
    if base.weights == "none" and any(a != "scratch" for a in arms):
        raise TransferLabError("the frozen and fine-tuned arms need pretrained weights: --weights none leaves only "
                               "--arms scratch")
    largest = max(sum(1 for _, y in dataset.train if y == c) for c in range(len(dataset.classes)))
    dropped = [n for n in ns if n != "all" and n >= largest]  # every class whole: the same as "all"
    ns = [n for n in ns if n not in dropped] + (["all"] if dropped and "all" not in ns else [])
    seed_list = [base.train.seed + k for k in range(seeds)]
    sweep_id = sweep_id or f"de-{base.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep = Sweep(sweep_id, dataset, base, ns, seed_list, arms, Path(runs_dir or paths.DEFAULT_RUNS_DIR),
                  dropped_ns=dropped, repeat=repeat)
    for arm in arms:
        cfg = arm_config(base, arm)
        for n in ns:
            for seed in seed_list:
                samples = nested_subset(dataset.train, n, seed)
                repeats = max(1, round(len(dataset.train) / len(samples))) if repeat else 1
                bs = point_batch_size(len(samples) * repeats, cfg.train.batch_size)
                train = dataclasses.replace(cfg.train, seed=seed, batch_size=bs)
                point_cfg = dataclasses.replace(cfg, train=train, name=f"{sweep_id}-{arm}-n{n}-s{seed}",
                                                sweep={"id": sweep_id, "arm": arm, "n": n, "seed": seed})
                sweep.points.append(Point(arm, n, seed, samples, point_cfg, repeats))
    return sweep


def run_point(sweep: Sweep, point: Point, listeners=(), stop=None, runner=run_experiment):
    """Train one point as a saved run on its subset; the summary is rewritten before and
    after.  Returns ``run_experiment``'s (run folder or None, result, seconds)."""
    sweep.status, point.status = "running", "running"
    sweep.save()
    subset = dataclasses.replace(sweep.dataset, train=point.train_list)

    features_exist = point.arm == "frozen" and point is not next(p for p in sweep.points if p.arm == "frozen")

    def share_features(trainer):
        trainer.feature_pool = sweep.pool
        if features_exist:
            torch.set_num_threads(1)  # after run_experiment set its threads; restored below
    threads = torch.get_num_threads()
    try:
        run_dir, result, seconds = runner(point.config, list(listeners), runs_dir=sweep.runs_dir, dataset=subset,
                                          on_trainer=share_features if point.arm == "frozen" else None, stop=stop)
    except BaseException as e:
        point.status, point.error = "error", " ".join(str(e).split()) or type(e).__name__
        sweep.save()
        raise
    finally:
        torch.set_num_threads(threads)
    point.run = Path(run_dir).name if run_dir else None
    point.best_val_acc = result.best_val_acc if result.history else None
    point.best_epoch, point.epochs = result.best_epoch, len(result.history)
    point.seconds, point.prep_seconds, point.feature_hits = seconds, result.prep_seconds, result.feature_hits
    point.status = "stopped" if result.stopped or not result.history else "done"
    sweep.save()
    return run_dir, result, seconds


def finish(sweep: Sweep, status: str) -> None:
    """The sweep's last word: points never started are marked "not run"."""
    for p in sweep.points:
        if p.status in ("queued", "running"):
            p.status = "not run" if p.status == "queued" else "stopped"
    sweep.status = status
    sweep.save()


def run_sweep(sweep: Sweep, listeners_for=lambda point: (), stop=None) -> Sweep:
    """Every point in order (the CLI; the dashboard's queue does the same job by job)."""
    status = "done"
    try:
        for point in sweep.points:
            if stop is not None and stop.is_set():
                status = "stopped"
                break
            try:
                run_point(sweep, point, listeners_for(point), stop)
            except TransferLabError:
                status = "error"
                continue  # recorded on the point; the others can still run
            if point.status == "stopped":
                status = "stopped"
                break
    except BaseException as e:  # Ctrl-C (or a bug): what finished stays saved and listed
        finish(sweep, "stopped" if isinstance(e, KeyboardInterrupt) else "error")
        raise
    finish(sweep, status)
    return sweep


def list_sweeps(runs_dir=None) -> list[dict]:
    """Saved sweep summaries, newest first (damaged files are left out)."""
    folder = Path(runs_dir or paths.DEFAULT_RUNS_DIR) / SWEEPS_DIR
    out = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            s = read_json(f)
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and isinstance(s.get("points"), list) and isinstance(s.get("id"), str):
            out.append(s)
    return sorted(out, key=lambda s: s.get("created", 0) if isinstance(s.get("created"), (int, float)) else 0, reverse=True)


def table(summary: dict) -> dict:
    """{arm: {n: [best val acc per seed]}} of the finished points."""
    out: dict = {}
    for p in summary.get("points", []):
        if p.get("status") == "done" and isinstance(p.get("best_val_acc"), (int, float)):
            out.setdefault(p["arm"], {}).setdefault(str(p["n"]), []).append(p["best_val_acc"])
    return out
