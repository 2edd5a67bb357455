"""How long a run will take: measured rates, with a FLOP-based guess before any.

The queue shows a waiting tab its place in line and a wait, and a running job one ETA
for all its runs (decoding, feature extraction, training and validation included).
Every phase of every run reports its throughput here, per (architecture, device type);
an architecture not measured yet is scaled from one that was, by the ratio of their
forward FLOPs (torchvision's weight metadata), and before anything was measured a
conservative prior for a small CPU is used.  Until measured, training images/s is taken
as forward images/s over ``TRAIN_COST``: a backward pass costs about twice a forward one,
and a training step adds the crops, BatchNorm's batch statistics and the optimiser (on
2 cores, ~130 eval against ~30 train img/s; a third, the FLOP count alone, made a
data-efficiency sweep's first estimate 7 min for 18).  Every epoch then teaches the
book the measured rate (``queue._learn_rates``).
"""
from __future__ import annotations

import functools
import threading

# Priors, measured once on a 2-core CPU (MobileNetV2, 0.30 GFLOPs: ~130 eval img/s at
# batch 4, ~30 train img/s, JPEG decode+resize ~90 img/s).  They only matter until the
# first run on a server has reported real numbers.
PRIOR_FORWARD_GFLOPS = {"cpu": 40.0, "cuda": 4000.0, "mps": 400.0}
PRIOR_DECODE_IPS = 90.0
PRIOR_HEAD_EPOCH_S = 0.05
PRIOR_TUNE_S = 10.0  # timing micro-batch sizes, the first plain phase of a model on a machine
EMA = 0.5
TRAIN_COST = 4.4  # forward images/s per training image/s, until measured (see above)


@functools.lru_cache(maxsize=None)
def gflops(arch: str) -> float:
    try:
        from torchvision import models
        return float(models.get_model_weights(arch).DEFAULT.meta.get("_ops") or 1.0)
    except (ValueError, AttributeError, KeyError):
        return 1.0


class SpeedBook:
    """Throughputs by (arch, device, kind): kinds "forward", "train" (images/s),
    "decode" (images/s, any arch) and "head_epoch" (seconds per head-only epoch)."""

    def __init__(self):
        self._rates: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self.features_done: set[tuple] = set()  # signatures whose features are in the cache

    def record(self, arch: str, device: str, kind: str, value: float) -> None:
        if not value or value <= 0:
            return
        key = (arch if kind != "decode" else "*", device, kind)
        with self._lock:
            old = self._rates.get(key)
            self._rates[key] = value if old is None else EMA * value + (1 - EMA) * old

    def rate(self, arch: str, device: str, kind: str) -> float:
        with self._lock:
            if kind == "decode":
                return self._rates.get(("*", device, kind), PRIOR_DECODE_IPS)
            if kind == "head_epoch":
                return self._rates.get((arch, device, kind), PRIOR_HEAD_EPOCH_S)
            own = self._rates.get((arch, device, kind))
            if own:
                return own
            # Scale a measured architecture by forward FLOPs.
            for (a, d, k), v in self._rates.items():
                if d == device and k == kind and a != "*":
                    return v * gflops(a) / gflops(arch)
            if kind == "train":
                fwd = next((v * gflops(a) / gflops(arch) for (a, d, k), v in self._rates.items()
                            if d == device and k == "forward"), None)
                return (fwd or PRIOR_FORWARD_GFLOPS.get(device, 40.0) / gflops(arch)) / TRAIN_COST
        return PRIOR_FORWARD_GFLOPS.get(device, 40.0) / gflops(arch)

    def phase_seconds(self, arch: str, device: str, phase: str, images: int) -> float:
        kind = {"decode": "decode", "features": "forward", "val": "forward", "train": "train"}[phase]
        return images / max(self.rate(arch, device, kind), 1e-6)


def feature_signature(cfg) -> tuple:
    """What decides a frozen run's features, as far as a config tells before the model is
    built (the exact key is computed by the trainer; this predicts cache hits)."""
    t = cfg.train
    return (str(cfg.data), cfg.arch, str(cfg.weights), cfg.val_split, t.seed, t.feature_views, t.amp, cfg.device)


def frozen_epochs(cfg) -> int:
    """How many of the run's epochs train the head alone on cached features (the frozen
    fast path), as ``schedules.plan`` divides them: all of them under a feature-extractor
    freeze, the head-only epochs of ``fine_tune``, the first epoch of ``gradual``."""
    t = cfg.train
    if not t.fast:
        return 0
    if cfg.freeze == "backbone":
        return t.epochs
    if t.epochs < 2:
        return 0  # no room for two phases: the schedule runs one, as configured
    if t.schedule == "fine_tune":
        return min(max(1, t.freeze_epochs), t.epochs - 1)
    return 1 if t.schedule == "gradual" else 0


def uses_frozen_path(cfg) -> bool:
    """The run computes (or reuses) frozen-body features for at least one epoch."""
    return frozen_epochs(cfg) > 0


def sweeps_frozen(cfg) -> bool:
    """The learning-rate finder sweeps the schedule's first phase: the head alone on cached
    features when that phase is frozen, else the whole network."""
    t = cfg.train
    return t.fast and (cfg.freeze == "backbone" or (t.schedule in ("fine_tune", "gradual") and t.epochs >= 2))


def sweep_iters(cfg) -> int:
    """Steps of a learning-rate sweep: fastai's 100 on cached features (a second or so);
    30 through the whole network, where each step costs a training batch (slow on a CPU)."""
    return 100 if sweeps_frozen(cfg) else 30


def plan_seconds(book: SpeedBook, cfg, device: str, num_train: int, num_val: int, cached: bool) -> dict[str, float]:
    """Seconds per phase of a run that has not started: {"decode", "features", "head_epoch",
    "plain_epoch", "head_epochs", "unfreeze", "epochs"}; see ``epochs_seconds``.

    A ``fine_tune`` run whose body is not frozen for good has both: the features once,
    ``freeze_epochs`` head epochs on them, then plain epochs, after decoding the training
    images again at the unfreeze (the plain path crops its own augmentations)."""
    arch, epochs = cfg.arch, cfg.train.epochs
    head = frozen_epochs(cfg)
    decode_all = book.phase_seconds(arch, device, "decode", num_train + num_val)
    plain = book.phase_seconds(arch, device, "train", num_train) + book.phase_seconds(arch, device, "val", num_val)
    out = {"decode": decode_all, "features": 0.0, "head_epoch": book.rate(arch, device, "head_epoch"),
           "plain_epoch": plain, "head_epochs": head, "unfreeze": 0.0, "epochs": epochs}
    if head:
        views = max(1, cfg.train.feature_views)
        out["features"] = 0.0 if cached else book.phase_seconds(arch, device, "features", num_val + views * num_train)
        if cached:
            out["decode"] = 0.0
        if head < epochs:
            out["unfreeze"] = book.phase_seconds(arch, device, "decode", num_train + (num_val if cached else 0))
    return out


def epoch_seconds(plan: dict, epoch: int) -> float:
    """The planned seconds of epoch number ``epoch`` (1-based)."""
    return plan["head_epoch"] if epoch <= plan["head_epochs"] else plan["plain_epoch"]


def epochs_seconds(plan: dict, first: int) -> float:
    """Seconds for epochs ``first``..last, the unfreeze's decoding included when it lies ahead
    (it comes just before the first plain epoch, ``head_epochs + 1``)."""
    last = int(plan["epochs"])
    total = sum(epoch_seconds(plan, e) for e in range(max(1, first), last + 1))
    if plan["unfreeze"] and first <= plan["head_epochs"] + 1 <= last:
        total += plan["unfreeze"]
    return total


def sweep_plan(book: SpeedBook, cfg, device: str, num_train: int, num_val: int, cached: bool, iters: int) -> dict:
    """Seconds of a learning-rate sweep: {"decode", "features", "step", "iters"}.  A step is
    one optimiser step: on cached features about a head epoch's worth of one batch, else
    a training batch of the whole network."""
    arch, bs = cfg.arch, min(cfg.train.batch_size, max(num_train, 1))
    if sweeps_frozen(cfg):
        batches = max(1, -(-num_train // max(cfg.train.batch_size, 1)))
        views = max(1, cfg.train.feature_views)
        prep = {"decode": 0.0, "features": 0.0} if cached else {
            "decode": book.phase_seconds(arch, device, "decode", num_train + num_val),
            "features": book.phase_seconds(arch, device, "features", num_val + views * num_train)}
        return {**prep, "step": book.rate(arch, device, "head_epoch") / batches, "iters": iters}
    return {"decode": book.phase_seconds(arch, device, "decode", num_train + num_val), "features": 0.0,
            "step": book.phase_seconds(arch, device, "train", bs), "iters": iters}
