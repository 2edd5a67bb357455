"""A run's progress as the trainer reports it, its remaining time, and its outcome in words.

``RunProgress`` is a trainer listener: the worker thread writes it, pages read it on
their next refresh (plain attribute reads of immutable values: no lock needed).
``SweepProgress`` is the same for a learning-rate sweep (a job of kind "lr_find").

A schedule can change path part-way (``fine_tune``: head-only epochs on cached
features, then the whole network): the time left is counted per epoch, each at the
cost of its own path, measured where an epoch of that path was seen.
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field

from core.jobs.estimates import PRIOR_TUNE_S, SpeedBook, epoch_seconds, epochs_seconds, plan_seconds, sweep_plan

PHASE_WORDS = {"decode": "reading images", "features": "extracting features", "train": "training",
               "val": "validating", "sweep": "sweeping", "tune": "timing micro-batches", "": "preparing"}


@dataclass
class RunProgress:
    label: str
    config: object                     # ExperimentConfig
    num_train: int = 0                 # known when the page submits it: used for estimates
    num_val: int = 0
    history: list[dict] = field(default_factory=list)
    status: str = "queued"             # queued | preparing | running | done | stopped | error
    phase: str = ""                    # decode | features | train | val
    what: str = ""                     # for decode: which images
    done: int = 0
    total: int = 0
    train_batches: int = 0             # batches per training epoch (``total`` is the phase's, validation's too)
    epoch: int = 0
    path: str = ""                     # the path now: frozen-features | plain (the result's when done)
    stage: str = ""                    # the schedule's phase now ("frozen", "unfrozen", ...)
    stages: int = 1                    # how many phases the schedule planned
    run_dir: str | None = None
    error: str | None = None
    trace: str | None = None           # for the server log, never the page
    best_val_acc: float | None = None
    stop_phase: str = ""
    feature_hits: int = 0
    started: float | None = None
    finished: float | None = None
    prep_seconds: float = 0.0
    phase_started: float = 0.0
    done0: int = 0                     # units already done when this phase was entered
    train_decoded: bool = False
    measured: dict = field(default_factory=dict)  # kind -> (images, seconds), for the speed book
    # Called with this run after each epoch that measured a training rate: the queue feeds
    # the speed book then, so the runs queued behind it are re-estimated after one epoch
    # rather than one whole run (a data-efficiency sweep's ETA jumped 7 -> 20 min when its
    # first scratch point ended).  Not saved: a restored run gets it again from the queue.
    on_measured: object = field(default=None, repr=False, compare=False)
    learnt: dict = field(default_factory=dict, repr=False)  # kind -> the measurement already in the book

    @property
    def elapsed(self) -> float:
        return ((self.finished or time.time()) - self.started) if self.started else 0.0

    def begin(self) -> None:
        self.status, self.started = "preparing", time.time()
        self._enter("")

    # ---- trainer events --------------------------------------------------------------
    def _enter(self, phase: str, total: int = 0, done: int = 0) -> None:
        if phase != self.phase:
            self._close_phase()
            # done0: a phase can be re-entered part-way (features: validation images, then
            # decoding the training images, then their features); rates count from here.
            self.phase, self.phase_started, self.done, self.done0 = phase, time.time(), done, done
        self.total = total

    def _close_phase(self) -> None:
        kind = {"decode": "decode", "features": "forward"}.get(self.phase)
        if kind and self.done > self.done0 and self.total:
            n, s = self.measured.get(kind, (0, 0.0))
            unit = self._images_per_unit()
            self.measured[kind] = (n + (self.done - self.done0) * unit, s + time.time() - self.phase_started)

    def _images_per_unit(self) -> float:
        # decode reports images; features report batches of the inference batch size
        if self.phase == "features" and self.total:
            views = max(1, self.config.train.feature_views)
            return (self.num_val + views * self.num_train) / self.total if self.num_train else 4
        return 1

    def on_progress(self, info: dict) -> None:
        self._enter(info["phase"], info.get("total", 0), max(0, info.get("done", 0) - 1))
        self.done, self.what = info.get("done", 0), info.get("what", "")
        self.train_decoded |= self.what == "training images"
        if info.get("epoch"):
            self.epoch = info["epoch"]

    def on_run_start(self, info: dict) -> None:
        self._close_phase()
        self.status, self.path, self.prep_seconds = "running", info["path"], info["prep_seconds"]
        self.feature_hits = info.get("feature_hits", 0)
        self.num_train, self.num_val = info["num_train"], info["num_val"]
        phases = info.get("phases") or [{}]
        self.stage, self.stages = phases[0].get("name", ""), len(phases)
        self.train_batches = info["batches_per_epoch"]
        self._enter("train", self.train_batches)

    def on_phase_start(self, info: dict) -> None:
        # The unfreeze: its decoding is over; from here epochs take the new path.
        self.stage, self.path = info["phase"], info["path"]
        self._enter("train", self.train_batches)  # not self.total: validation's batches
        self.phase_started = time.time()

    def on_batch_end(self, info: dict) -> None:
        self.train_batches = info["batches"]
        self._enter("train", self.train_batches)
        self.epoch, self.done = max(info["epoch"], 1), info["batch"]

    def on_epoch_end(self, record: dict) -> None:
        self.history.append(record)
        train_s = record["seconds"] - record.get("val_seconds", 0.0)
        if record.get("path", self.path) != "frozen-features":
            self.measured["train"] = (self.num_train, train_s)
            if record.get("val_seconds"):
                self.measured["forward"] = (self.num_val, record["val_seconds"])
            if self.on_measured is not None:
                self.on_measured(self)
        self._enter("train", self.train_batches)  # not self.total: validation's batches
        self.phase_started = time.time()

    # ---- time left -----------------------------------------------------------------
    def _plan(self, book: SpeedBook, device: str, cached: bool) -> dict:
        """The plan, corrected by what this run measured: its own epochs per path, its own
        decoding and feature rates."""
        cfg = self.config
        plan = plan_seconds(book, cfg, device, self.num_train, self.num_val, cached and not self.history)
        for key, frozen in (("head_epoch", True), ("plain_epoch", False)):
            secs = [h["seconds"] for h in self.history if (h.get("path", self.path) == "frozen-features") == frozen]
            if secs:  # measured epochs beat any estimate
                plan[key] = sum(secs) / len(secs)
        for kind, key, images in (("decode", "decode", self.num_train + self.num_val),
                                  ("forward", "features", self.num_val + max(1, cfg.train.feature_views) * self.num_train)):
            n, secs = self.measured.get(kind, (0, 0.0))
            if n >= 8 and secs > 0.5 and plan[key]:  # this run's own rate beats the book's
                plan[key] = images * secs / n
        return plan

    def _rate_left(self) -> float | None:
        """Seconds left in the current phase at its measured rate, once a few units are
        done (a rate from one unit, a batch still running, swings by the second)."""
        spent, progressed = time.time() - self.phase_started, self.done - self.done0
        return (self.total - self.done) * spent / progressed if progressed >= 3 and spent > 1 else None

    def remaining_seconds(self, book: SpeedBook, device: str, cached: bool) -> float:
        if self.status in ("done", "stopped", "error"):
            return 0.0
        plan = self._plan(book, device, cached)
        finished = len(self.history)
        if self.status == "queued":
            return plan["decode"] + plan["features"] + epochs_seconds(plan, 1)
        frac = self.done / self.total if self.total else 0.0
        rate_left = self._rate_left()
        if self.status == "running" and self.phase in ("decode", "features"):
            # Preparing a later phase (the unfreeze decodes the training images again).
            left = rate_left if rate_left is not None else plan["unfreeze"] * (1 - frac)
            return left + epochs_seconds({**plan, "unfreeze": 0.0}, finished + 1)
        if self.phase in ("", "decode"):
            left = rate_left if rate_left is not None and self.phase == "decode" else plan["decode"]
            if self.phase == "decode" and self.what == "validation images":
                left += plan["decode"] * self.num_train / max(self.num_train + self.num_val, 1)
            return left + plan["features"] + epochs_seconds(plan, 1)
        if self.phase == "features":
            # Validation features come first; the training images are decoded after them.
            pending_decode = 0.0 if self.train_decoded else plan["decode"] * self.num_train / max(self.num_train + self.num_val, 1)
            return (rate_left if rate_left is not None else plan["features"] * (1 - frac)) + pending_decode + epochs_seconds(plan, 1)
        spent = time.time() - self.phase_started
        now = epoch_seconds(plan, finished + 1)
        if self.phase == "tune":
            # Timing micro-batch sizes comes before the next epoch's first batch: that whole
            # epoch is still ahead (the walk saw "7 s left" stand still for the ~10 s it took).
            return max(PRIOR_TUNE_S - spent, 1.0) + epochs_seconds({**plan, "unfreeze": 0.0}, finished + 1)
        if self.phase == "train" and rate_left is not None and self.path != "frozen-features":
            current = rate_left + book.phase_seconds(self.config.arch, device, "val", self.num_val)
        elif self.phase == "val":
            current = rate_left if rate_left is not None else now * 0.2
        else:
            current = max(0.0, now - spent)
        return current + epochs_seconds(plan, finished + 2)

    # ---- outcome -------------------------------------------------------------------
    def outcome(self) -> str:
        """One sentence on how the run ended and what was kept."""
        if self.status == "error":
            return f"failed: {self.error}"
        n = len(self.history)
        best = (f"best val accuracy {self.best_val_acc:.1%} (epoch {max(self.history, key=lambda h: h['val_acc'])['epoch']})"
                if self.best_val_acc is not None and n else "")
        saved = f"saved as run {Path(self.run_dir).name}" if self.run_dir else ""  # the run's name, not a server path
        if self.status == "done":
            return f"done · {best} · {saved}"
        if self.status != "stopped":
            return self.status
        if self.stop_phase == "queued" or self.started is None:
            return "stopped before it started: nothing trained, nothing saved"
        if not self.run_dir:
            where = PHASE_WORDS.get(self.phase, self.phase)
            return f"stopped while {where}, before a first validated epoch: nothing saved"
        of = self.config.train.epochs
        cut = " (the epoch in progress was not validated and was dropped)" if self.stop_phase == "validation" else ""
        return f"stopped after {n} of {of} epochs{cut} · kept the best weights: {best} · {saved}"

    def phase_text(self) -> str:
        if self.status == "queued":
            return "waiting"
        if self.phase == "decode":
            return f"reading {self.what or 'images'} {self.done}/{self.total}"
        if self.phase == "features":
            return f"extracting features {self.done}/{self.total}"
        if self.phase == "val":
            return f"epoch {self.epoch}/{self.config.train.epochs} · validating"
        if self.phase == "tune":
            return "timing this machine's micro-batch sizes (once per model and machine)"
        if self.phase == "train":
            stage = f" · {self.stage}" if self.stages > 1 and self.stage else ""
            epochs = self.config.train.epochs
            return f"epoch {min(len(self.history) + 1, epochs)}/{epochs}{stage} · batch {self.done}/{self.total}"
        return "preparing"


@dataclass
class SweepProgress(RunProgress):
    """A learning-rate sweep's progress: the same preparation events as a run (reading
    images, features), then one ``on_batch_end`` per step of the sweep.  ``result`` is
    ``run_lr_find``'s dict once it ends; nothing is saved to disk."""
    iters: int = 100
    steps: int = 0
    sweep_started: float = 0.0
    result: dict | None = None

    def on_batch_end(self, info: dict) -> None:
        if not self.steps:
            self._close_phase()
            self.status, self.sweep_started = "running", time.time()
            self.phase, self.phase_started = "sweep", time.time()
        self.steps += 1
        self.done, self.total = self.steps, self.iters

    def on_epoch_end(self, record: dict) -> None:  # a sweep has no epochs
        pass

    def remaining_seconds(self, book: SpeedBook, device: str, cached: bool) -> float:
        if self.status in ("done", "stopped", "error"):
            return 0.0
        plan = sweep_plan(book, self.config, device, self.num_train, self.num_val, cached, self.iters)
        step = plan["step"]
        if self.steps >= 3:
            step = (time.time() - self.sweep_started) / self.steps
        sweep = max(0, self.iters - self.steps) * step  # an upper bound: a diverging loss ends it early
        if self.status == "queued" or self.phase == "":
            return plan["decode"] + plan["features"] + sweep
        if self.phase in ("decode", "features"):
            rate_left = self._rate_left()
            frac = self.done / self.total if self.total else 0.0
            part = plan[self.phase] * (1 - frac) if rate_left is None else rate_left
            return part + (plan["features"] if self.phase == "decode" else 0.0) + sweep
        return sweep

    def phase_text(self) -> str:
        if self.phase == "sweep":
            return f"sweeping the learning rate, step {self.steps}/{self.iters}"
        return super().phase_text()

    def outcome(self) -> str:
        if self.status == "error":
            return f"failed: {self.error}"
        r = self.result or {}
        if self.status == "stopped" and not r.get("iters"):
            return f"stopped while {PHASE_WORDS.get(self.phase, self.phase)}, before the sweep began: nothing to show"
        if self.status not in ("done", "stopped"):
            return self.status
        found = f"suggests {r['suggestion']:.1e}" if r.get("suggestion") else "no suggestion (too few steps)"
        how = "stopped" if self.status == "stopped" else "done"
        return f"{how} after {r.get('iters', 0)} steps · {found}"


@dataclass
class PointProgress(RunProgress):
    """One point of a data-efficiency sweep (a job of kind "data_efficiency"): a run on a
    subset.  Frozen points read rows of features computed once for the whole training
    split: the first one pays for them (its ``num_train`` is the whole split until it
    starts), the later ones are estimated as cached (``features_shared``)."""
    features_shared: bool = False

    def remaining_seconds(self, book: SpeedBook, device: str, cached: bool) -> float:
        return super().remaining_seconds(book, device, cached or self.features_shared)
