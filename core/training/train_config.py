"""What a training run is asked to do (``TrainConfig``) and what it gives back
(``TrainResult``): plain data, shared by the trainer, the CLI, the dashboard and the
run store, so none of them needs the training loop to read a setting."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.data.batches import DEFAULT_CACHE_MB


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.001               # the peak rate of the head (one-cycle) or the starting rate
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"          # sgd | adam | adamw
    scheduler: str = "step"         # step | cosine | none | onecycle | warmup_cosine (standard schedule)
    step_size: int = 7
    gamma: float = 0.1
    schedule: str = "standard"      # standard | fine_tune | gradual, see schedules.py
    freeze_epochs: int = 1          # fine_tune: head-only epochs before the unfreeze
    lr_spread: float = 100.0        # fine_tune / gradual: the first stage trains this many times slower than the head
    unfreeze_div: float = 2.0       # fine_tune / gradual: unfrozen phases peak at lr / this (fastai halves)
    bn_stats: str = "auto"          # auto | train | frozen: BatchNorm statistics while the body trains (auto:
                                    # kept after a head-only phase, see surgery.keep_bn_statistics)
    pct_start: float = 0.3          # one-cycle: share of the steps rising to the peak (warm-up share for warmup_cosine)
    label_smoothing: float = 0.0
    seed: int = 0
    amp: str = "auto"               # auto (CUDA only) | on | off
    fast: bool = True               # allow the fast paths
    micro_batch: int = 0            # 0: measured per machine (micro_batch.py); N: forward/backward N images at a time
    feature_views: int = 1          # augmented views cached per image on the frozen fast path (1: fastest, same accuracy here)
    cache_mb: int = DEFAULT_CACHE_MB
    feature_cache: bool = True      # share frozen-body features across runs (same results, see feature_cache.py)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = 0.0
    best_epoch: int = 0
    best_state: dict | None = None
    stopped: bool = False
    seconds: float = 0.0
    prep_seconds: float = 0.0
    path: str = "plain"             # plain | frozen-features | frozen-features, then plain
    path_note: str = ""
    stop_phase: str = ""            # where a stop request took effect: queued | preparing | training | validation
    feature_hits: int = 0           # frozen path: feature sets taken from the shared cache
    phases: list[dict] = field(default_factory=list)  # the schedule as run (schedules.Phase), with its path
    micro_batch: int = 0            # plain path: images per forward/backward (0: the frozen path only)
