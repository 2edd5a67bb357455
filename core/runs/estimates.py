"""How long a run will take: measured rates, with a FLOP-based guess before any.

The queue shows a waiting tab its place in line and a wait, and a running job one ETA
for all its runs (decoding, feature extraction, training and validation included).
Every phase of every run reports its throughput here, per (architecture, device type);
an architecture not measured yet is scaled from one that was, by the ratio of their
forward FLOPs (torchvision's weight metadata), and before anything was measured a
conservative prior for a small CPU is used.  A backward pass costs about twice a
forward one, so training images/s is taken as a third of forward images/s until
measured.
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
EMA = 0.5


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
                return (fwd or PRIOR_FORWARD_GFLOPS.get(device, 40.0) / gflops(arch)) / 3
        return PRIOR_FORWARD_GFLOPS.get(device, 40.0) / gflops(arch)

    def phase_seconds(self, arch: str, device: str, phase: str, images: int) -> float:
        kind = {"decode": "decode", "features": "forward", "val": "forward", "train": "train"}[phase]
        return images / max(self.rate(arch, device, kind), 1e-6)


def feature_signature(cfg) -> tuple:
    """What decides a frozen run's features, as far as a config tells before the model is
    built (the exact key is computed by the trainer; this predicts cache hits)."""
    t = cfg.train
    return (str(cfg.data), cfg.arch, str(cfg.weights), cfg.val_split, t.seed, t.feature_views, t.amp, cfg.device)


def uses_frozen_path(cfg) -> bool:
    return cfg.freeze == "backbone" and cfg.train.fast


def plan_seconds(book: SpeedBook, cfg, device: str, num_train: int, num_val: int, cached: bool) -> dict[str, float]:
    """Seconds per phase of a run that has not started: {"decode", "features", "epoch"}."""
    arch, epochs = cfg.arch, cfg.train.epochs
    if uses_frozen_path(cfg):
        if cached:
            return {"decode": 0.0, "features": 0.0, "epoch": book.rate(arch, device, "head_epoch"), "epochs": epochs}
        views = max(1, cfg.train.feature_views)
        return {"decode": book.phase_seconds(arch, device, "decode", num_train + num_val),
                "features": book.phase_seconds(arch, device, "features", num_val + views * num_train),
                "epoch": book.rate(arch, device, "head_epoch"), "epochs": epochs}
    epoch = book.phase_seconds(arch, device, "train", num_train) + book.phase_seconds(arch, device, "val", num_val)
    return {"decode": book.phase_seconds(arch, device, "decode", num_train + num_val), "features": 0.0,
            "epoch": epoch, "epochs": epochs}
