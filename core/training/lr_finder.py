"""The learning-rate finder (Leslie Smith's range test, as fastai's ``lr_find``).

Train on successive batches while the rate grows exponentially from ``start`` to
``end``; record the loss after each step, smoothed (exponential moving average,
debiased); stop early when it diverges (over 4x its minimum, or not finite).  The model
is restored afterwards, weights, BatchNorm statistics and what trains, so the sweep
leaves nothing behind.

It sweeps what the schedule's *first* phase trains: with ``fine_tune`` that is the head
alone (as fastai users run ``lr_find`` before ``fine_tune``), which takes the frozen fast
path and costs about a second once features are cached.  It goes through the trainer's
own batches and steps (``Trainer._prepare`` / ``_run_batches``), so the loss it plots is
the loss training will see.

The suggestion is fastai's default, the *valley*: the longest stretch over which the
smoothed loss keeps falling, and the rate a little past its middle -- high enough to
learn fast, well short of the cliff.  The steepest point and "minimum / 10" are reported
beside it.
"""
from __future__ import annotations

import math
import threading
import time

import torch
from torch import nn

from core.models.surgery import stages_of
from core.training import schedules
from core.training.run_random import drawing_from

BETA = 0.9        # loss smoothing.  fastai's 0.98 lags about 50 steps, half of a 100-step
                  # sweep: the curve fell a decade after the per-step losses did, and the
                  # suggestion came out low (ants/bees head: 2.8e-3 where the loss fell from 3e-3 on)
DIVERGE = 4.0     # stop once the smoothed loss exceeds this multiple of its minimum


class _Sweep:
    """Per-step hook for ``Trainer._run_batches``: sets the next rate, records the loss."""

    def __init__(self, opt, start: float, end: float, iters: int, done: threading.Event, user_stop):
        self.opt, self.start, self.end, self.iters = opt, start, end, iters
        self.done, self.user_stop = done, user_stop
        self.lrs: list[float] = []
        self.raw: list[float] = []
        self.smooth: list[float] = []
        self.avg, self.best, self.reason = 0.0, math.inf, ""
        self._set(0)

    def rate(self, i: int) -> float:
        return self.start * (self.end / self.start) ** (i / max(1, self.iters - 1))

    def _set(self, i: int) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.rate(i)

    def on_batch_end(self, info: dict) -> None:  # listener: the loss of the step just taken
        i = len(self.raw)
        loss = float(info["loss"])
        self.lrs.append(self.rate(i))
        self.raw.append(loss)
        self.avg = BETA * self.avg + (1 - BETA) * loss
        smooth = self.avg / (1 - BETA ** (i + 1))
        self.smooth.append(smooth)
        if not math.isfinite(smooth):
            self.reason = "the loss stopped being finite"
        elif smooth > DIVERGE * self.best and i > 2:
            self.reason = f"the loss passed {DIVERGE:g}× its minimum"
        self.best = min(self.best, smooth)
        if self.reason or len(self.raw) >= self.iters or (self.user_stop is not None and self.user_stop.is_set()):
            self.done.set()

    def step(self) -> None:  # scheduler protocol: called after each optimiser step
        self._set(len(self.raw))


def valley(losses: list[float]) -> int:
    """Index of fastai's 'valley' suggestion: in the longest decreasing run of the smoothed
    loss (a longest decreasing subsequence), a point about half way along it."""
    n = len(losses)
    if n < 3:
        return 0
    run = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
            if run[end] < run[i]:
                end, start = i, i - run[i]
    third = (end - start) / 3
    return max(0, min(n - 1, start + int(third) + int(third / 2)))


def suggest(lrs: list[float], losses: list[float]) -> dict:
    if len(losses) < 3:
        return {"suggestion": None, "method": "too few steps to suggest a rate"}
    finite = [(lr, l) for lr, l in zip(lrs, losses) if math.isfinite(l)]
    k = valley([l for _, l in finite])
    low = min(range(len(finite)), key=lambda i: finite[i][1])
    logs = [math.log10(lr) for lr, _ in finite]
    # The first steps' smoothed loss is mostly its debiasing: the steepest point is looked for after them.
    skip = max(1, len(finite) // 10)
    # and only up to the minimum: past it the loss is blowing up, whatever its slope says.
    slopes = {i: (finite[i + 1][1] - finite[i - 1][1]) / (logs[i + 1] - logs[i - 1])
              for i in range(skip, min(low, len(finite) - 1))}
    steep = min(slopes, key=slopes.get) if slopes else low
    return {"suggestion": finite[k][0], "method": "valley",
            "explanation": "about half way down the longest stretch where the smoothed loss keeps falling "
                           "(fastai's default): fast, and well short of where the loss blows up",
            "steepest": finite[steep][0], "minimum_over_10": finite[low][0] / 10}


class _Either:
    """Set when the sweep has enough or the user pressed Stop (the trainer asks ``is_set``)."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    def set(self) -> None:
        self.events[0].set()


def find_lr(trainer, start: float = 1e-7, end: float = 10.0, iters: int = 100, stop=None) -> dict:
    """Sweep on ``trainer``'s model and data; the model comes back exactly as it was.
    A ``stop`` (``threading.Event``) ends it within a batch: what was swept so far is kept."""
    from core.data.batches import Stopped
    from core.training.trainer import TrainResult
    model = trainer.model
    t0 = time.perf_counter()
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    done = threading.Event()
    trainer._stop = _Either(done, stop)  # the sweep ends the trainer's loop when it has enough
    model.to(trainer.device, memory_format=torch.channels_last)
    trainer.base_trainable = dict(trainable)
    first = schedules.plan(trainer.cfg, trainer.base_freeze, len(stages_of(model, trainer.arch)))[0]
    result, sweep = TrainResult(), None
    try:
        trainer.bn_frozen = first.bn_frozen
        trainer._apply_freeze(first.freeze)
        step = trainer._prepare(result)
        opt = schedules.make_optimizer(schedules.discriminative_groups(model, trainer.arch, start, 1.0), trainer.cfg)
        sweep = _Sweep(opt, start, end, iters, done, stop)
        trainer.listeners.append(sweep)
        criterion = nn.CrossEntropyLoss(label_smoothing=trainer.cfg.label_smoothing)
        epoch = 0
        while not trainer._stop.is_set():
            epoch += 1
            trainer.rng.seed(trainer.cfg.seed * 100_003 + epoch)
            with drawing_from(model, trainer.rng):
                _, _, seen = step(epoch, opt, criterion, sweep)
            if seen == 0:
                break
    except Stopped:
        pass  # stopped while reading images or extracting features: nothing swept
    finally:
        model.load_state_dict(saved)
        for n, p in model.named_parameters():
            p.requires_grad_(trainable[n])
        trainer.listeners = [x for x in trainer.listeners if not isinstance(x, _Sweep)]
    lrs, smooth, raw, reason = (sweep.lrs, sweep.smooth, sweep.raw, sweep.reason) if sweep else ([], [], [], "")
    stopped = stop is not None and stop.is_set() and len(raw) < iters and not reason
    out = {"lrs": lrs, "losses": smooth, "raw_losses": raw, "iters": len(raw),
           "start": start, "end": end, "path": trainer.path, "phase": first.name, "stopped": stopped,
           "ended": reason or ("stopped" if stopped else f"reached {end:g}" if len(raw) >= iters else ""),
           "seconds": time.perf_counter() - t0, "feature_hits": result.feature_hits}
    return {**out, **suggest(lrs, smooth)}
