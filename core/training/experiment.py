"""One experiment end to end: dataset -> model -> freeze -> train -> saved run.

The CLI, the dashboard and the benchmark all go through ``run_experiment`` so a run
means the same thing wherever it was started.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import paths
from core.data.datasets import Dataset, scan_dataset
from core.device import configure_threads, device_label, pick_device
from core.errors import DatasetError
from core.runs.store import RunWriter
from core.models.surgery import freeze, summarize
from core.training import distributed
from core.training.schedules import describe
from core.training.trainer import TrainConfig, Trainer
from core.models.zoo import build_model


@dataclass
class ExperimentConfig:
    data: str
    arch: str = "mobilenet_v2"
    weights: str = "imagenet"         # imagenet | none | path to a .pth/.pt/.safetensors
    freeze: object = "backbone"       # backbone | none | N | [stage names]
    hidden: int = 0
    dropout: float = 0.0
    val_split: float = 0.2
    device: str = "auto"
    name: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    sync_bn: bool = False             # under torchrun on GPUs: BatchNorm statistics over the global batch
    sweep: dict | None = None         # a data-efficiency point: {"id", "arm", "n", "seed"} (data_efficiency.py)
    confine: bool = False             # the dashboard's: read nothing through links out of the dataset folder (scan_dataset)
    owner: str | None = None          # who the run belongs to (core/access.py); None: the operator (the CLI)
    cleaning: str | None = None       # a cleaned dataset's id (core/audit/cleaned.py): ``data`` is its source, its
                                      # exclusions and relabels applied; the run's config records which version

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        """The inverse of ``to_dict`` (a job recorded in the queue's database)."""
        return cls(**{**d, "train": TrainConfig(**d["train"])})

    def to_dict(self) -> dict:
        return asdict(self)

    def default_name(self) -> str:
        w = "scratch" if self.weights == "none" else ("imagenet" if self.weights == "imagenet" else Path(self.weights).stem)
        f = self.freeze if not isinstance(self.freeze, (list, tuple)) else "custom"
        return f"{self.arch}-{w}-freeze_{f}-{time.strftime('%Y%m%d-%H%M%S')}"


def scan(cfg: ExperimentConfig) -> Dataset:
    """The experiment's dataset: ``cfg.data`` scanned, or the cleaned dataset ``cfg.cleaning``
    (its source with its own recorded split, checked as its owner's: a visitor never
    trains on another's cleaning, nor through one on a source no longer theirs)."""
    if cfg.cleaning:
        from core.access import OPERATOR, Viewer
        from core.audit import cleaned
        owner = cfg.owner or OPERATOR
        return cleaned.dataset(cfg.cleaning, Viewer(owner, operator=owner == OPERATOR))
    return scan_dataset(cfg.data, cfg.val_split, cfg.train.seed, confine=cfg.confine)


def prepare_model(cfg: ExperimentConfig, num_classes: int, progress=None):
    built = build_model(cfg.arch, num_classes, cfg.weights, cfg.hidden, cfg.dropout, seed=cfg.train.seed, progress=progress)
    freeze(built.model, cfg.arch, cfg.freeze)
    return built


def run_experiment(cfg: ExperimentConfig, listeners=(), runs_dir=None, dataset: Dataset | None = None,
                   on_trainer=None, progress=None, stop=None,
                   ranks: distributed.Ranks | None = None) -> tuple[Path | None, object, float]:
    """Train and save.  Returns (run folder or None if stopped before one epoch, result,
    wall seconds from reading the dataset to the saved run).  ``on_trainer(trainer)``
    receives the trainer before it starts; ``stop`` (a ``threading.Event``) ends the run
    between batches in any phase.  Under torchrun ``ranks`` says which process this is:
    all train, rank 0 alone writes the run (and gets its folder back)."""
    t0 = time.perf_counter()
    ranks = ranks or distributed.SINGLE
    configure_threads()
    device = ranks.device if ranks.device is not None else pick_device(cfg.device)

    def setup():
        data = dataset if dataset is not None else scan(cfg)
        if ranks.active and len(data.train) < ranks.world:  # else a rank would have nothing to train on
            raise DatasetError(f"{len(data.train)} training image(s) for {ranks.world} processes: "
                               f"start torchrun with at most {len(data.train)} (--nproc-per-node)")
        built = prepare_model(cfg, len(data.classes), progress)
        if cfg.sync_bn:
            ranks.sync_batchnorm(built.model)  # in place: BatchNorm layers become SyncBatchNorm
        return data, built
    dataset, built = ranks.agreed(setup)  # a bad input on any rank: one error line, from rank 0
    summary = summarize(built.model, cfg.arch)
    config = {**cfg.to_dict(), "data": str(dataset.root), "model": built.spec.to_dict(),
              "transform": built.transform.to_dict(), "weights_loaded": built.weights,
              "device": str(device), "device_label": device_label(device),
              "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
              "schedule_text": describe(cfg.train, cfg.freeze), "processes": ranks.world,
              "cleaned": getattr(dataset, "cleaning", None)}  # which cleaning, at which version (or None)
    root = dataset.root
    split = {"root": str(root), "layout": dataset.layout,
             "train": [[str(Path(p).relative_to(root)), y] for p, y in dataset.train],
             "val": [[str(Path(p).relative_to(root)), y] for p, y in dataset.val]}
    writer = RunWriter(runs_dir or paths.DEFAULT_RUNS_DIR, cfg.name or cfg.default_name(), config, dataset.classes, split,
                       built.load_report.to_dict() if built.load_report else None,
                       [{"path": p, "reason": r} for p, r in dataset.skipped]) if ranks.is_main else None
    ranks.share_run_folder(writer.partial if writer else None)  # a survivor removes it if rank 0 dies
    trainer = Trainer(built.model, cfg.arch, dataset.train, dataset.val, built.transform, cfg.train, device,
                      [writer, *listeners] if writer else list(listeners), stop=stop, freeze=cfg.freeze, ranks=ranks)
    if on_trainer:
        on_trainer(trainer)

    def finish() -> Path:
        writer.finish(seconds=time.perf_counter() - t0, num_train=len(dataset.train), num_val=len(dataset.val),
                      skipped=len(dataset.skipped))
        return writer.final
    try:
        result = trainer.fit()
    except BaseException as e:
        if writer is None:
            raise
        kept = trainer.result if distributed.lost_peer(ranks, e) else None
        if kept is None or kept.best_state is None:
            writer.abandon()  # a crash leaves no half run behind, not even in .partial/
            raise
        # Another rank died: the epochs validated before it are whole, and are kept as a stop keeps them.
        kept.stopped, kept.stop_phase = True, kept.stop_phase or "lost a rank"
        kept.seconds = time.perf_counter() - t0
        writer.on_run_end(kept)
        ranks.kept = {"run_dir": str(finish()), "epoch": kept.best_epoch, "val_acc": kept.best_val_acc}
        raise
    seconds = time.perf_counter() - t0
    if writer is None or result.best_state is None:
        return None, result, seconds
    return finish(), result, seconds


def run_lr_find(cfg: ExperimentConfig, listeners=(), dataset: Dataset | None = None, stop=None,
                start: float = 1e-7, end: float = 10.0, iters: int = 100) -> dict:
    """The learning-rate finder on the model and data ``cfg`` describes (nothing is saved):
    the curve, a suggested rate and how it was chosen (``lr_finder.py``)."""
    from core.training.lr_finder import find_lr
    if distributed.from_env().active:
        raise ValueError("lr-find runs in one process: start it with python -m core, not torchrun")
    configure_threads()
    device = pick_device(cfg.device)
    if dataset is None:
        dataset = scan(cfg)
    built = prepare_model(cfg, len(dataset.classes))
    trainer = Trainer(built.model, cfg.arch, dataset.train, dataset.val, built.transform, cfg.train, device,
                      list(listeners), freeze=cfg.freeze)
    out = trainer.guarded(find_lr, trainer, start, end, iters, stop)  # out of GPU memory: the trainer's one message
    return {**out, "arch": cfg.arch, "weights": built.weights, "freeze": cfg.freeze, "schedule": cfg.train.schedule,
            "optimizer": cfg.train.optimizer, "batch_size": cfg.train.batch_size, "num_train": len(dataset.train)}
