"""The training loop: train and val phases per epoch, events for listeners, a stop signal.

Listeners (the CLI's printer, the dashboard, the run writer) implement any of
``on_run_start(info)``, ``on_batch_end(info)``, ``on_epoch_end(record)``,
``on_run_end(result)``.  ``request_stop()`` ends the run between batches; what was
learned so far, and the best weights, are kept.

Two ways through an epoch, chosen automatically and with the same meaning:
* plain: full forward/backward over batches from ``data.batches.BatchSource``;
* frozen fast path (``features.py``, ``frozen_path.py``): the frozen body runs once, the
  head trains on its cached output, shared across runs by ``feature_cache.py``.  Used
  when only the head trains and the equivalence check passes.

A stop request takes effect within a batch in every phase (decoding, feature
extraction, training, validation); a run stopped before its first validated epoch
keeps nothing.  Besides the events above, ``on_progress({"phase", "done", "total"})``
reports decoding, feature extraction and validation.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from core.training import features, frozen_path
from core.models.inference import fused_for_inference
from core.device import amp_context, inference_batch_size, needs_grad_scaler
from core.data.batches import DEFAULT_CACHE_MB, BatchSource, Stopped
from core.models.surgery import train_mode, trainable_parameters
from core.data.transforms import TransformSpec


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"          # sgd | adam | adamw
    scheduler: str = "step"         # step | cosine | none
    step_size: int = 7
    gamma: float = 0.1
    label_smoothing: float = 0.0
    seed: int = 0
    amp: str = "auto"               # auto (CUDA only) | on | off
    fast: bool = True               # allow the fast paths
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
    path: str = "plain"             # plain | frozen-features
    path_note: str = ""
    stop_phase: str = ""            # where a stop request took effect: queued | preparing | training | validation
    feature_hits: int = 0           # frozen path: feature sets taken from the shared cache


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use sgd, adam or adamw")


def make_scheduler(opt, cfg: TrainConfig):
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    if cfg.scheduler == "none":
        return None
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}: use step, cosine or none")


def compute_loss(out, y, criterion) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and main logits; GoogLeNet/Inception return auxiliary logits while training."""
    if isinstance(out, tuple):
        main, aux = out[0], [a for a in out[1:] if a is not None]
        return criterion(main, y) + 0.4 * sum(criterion(a, y) for a in aux), main
    return criterion(out, y), out


class Trainer:
    def __init__(self, model: nn.Module, arch: str, train_samples, val_samples, spec: TransformSpec,
                 cfg: TrainConfig, device: torch.device, listeners=(), stop: threading.Event | None = None,
                 feature_cache=None):
        self.model, self.arch, self.spec, self.cfg, self.device = model, arch, spec, cfg, device
        self.train_samples, self.val_samples = train_samples, val_samples
        self.listeners = list(listeners)
        self._stop = stop or threading.Event()  # a job's one stop signal, shared by its runs
        self.autocast = amp_context(device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg.amp) else None
        if feature_cache is None and cfg.feature_cache:
            from core.training.feature_cache import default_cache
            feature_cache = default_cache()
        self.feature_cache = feature_cache if cfg.feature_cache else None

    # ---- events ----------------------------------------------------------------------
    def emit(self, event: str, payload) -> None:
        for listener in self.listeners:
            fn = getattr(listener, event, None)
            if fn:
                fn(payload)

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ---- the loop --------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, t0 = self.cfg, time.perf_counter()
        torch.manual_seed(cfg.seed)
        self.model.to(self.device, memory_format=torch.channels_last)
        train_mode(self.model)
        result = TrainResult()
        try:
            step = self._prepare(result)
        except Stopped:  # nothing trained yet: nothing to keep
            result.stopped, result.stop_phase = True, "preparing"
            result.seconds = result.prep_seconds = time.perf_counter() - t0
            self.emit("on_run_end", result)
            return result
        result.prep_seconds = time.perf_counter() - t0
        opt = make_optimizer(trainable_parameters(self.model), cfg)
        sched = make_scheduler(opt, cfg)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.emit("on_run_start", {"epochs": cfg.epochs, "path": result.path, "path_note": result.path_note,
                                   "num_train": len(self.train_samples), "num_val": len(self.val_samples),
                                   "batches_per_epoch": self._batches_per_epoch(), "prep_seconds": result.prep_seconds,
                                   "feature_hits": result.feature_hits})
        for epoch in range(1, cfg.epochs + 1):
            te = time.perf_counter()
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentations, shuffles, dropout
            lr = opt.param_groups[0]["lr"]
            train_loss, train_acc, seen = step(epoch, opt, criterion)
            if seen == 0:  # stopped before the first batch of this epoch
                result.stop_phase = "training"
                break
            tv = time.perf_counter()
            val = self._validate(criterion, epoch)
            if val is None:  # stopped mid-validation: this epoch's weights are unvalidated, not kept
                result.stop_phase = "validation"
                break
            val_loss, val_acc = val
            if sched:
                sched.step()
            secs = time.perf_counter() - te
            record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                      "val_acc": val_acc, "lr": lr, "seconds": secs, "val_seconds": time.perf_counter() - tv,
                      "images_per_s": seen / max(tv - te, 1e-9), "partial": seen < len(self.train_samples)}
            result.history.append(record)
            if val_acc > result.best_val_acc or result.best_state is None:
                result.best_val_acc, result.best_epoch = val_acc, epoch
                result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.emit("on_epoch_end", record)
            if self.stopping:
                result.stop_phase = "training"
                break
        result.stopped = self.stopping
        result.seconds = time.perf_counter() - t0
        self.emit("on_run_end", result)
        return result

    def _prepare(self, result: TrainResult):
        """Choose the path and get its data ready; returns the epoch function."""
        cfg = self.cfg
        blocker = features.fast_path_blocker(self.model, self.arch) if cfg.fast else "fast paths off"
        pin = self.device.type == "cuda"
        cache_mb = cfg.cache_mb if cfg.fast else 0
        self.infer_bs = inference_batch_size(self.device)
        self.val_source = self.val_features = None
        if blocker is None:
            got = frozen_path.prepare(self.model, self.arch, self.train_samples, self.val_samples, self.spec, cfg,
                                      self.device, self.autocast, self.infer_bs, self.feature_cache, self.emit, self._stop)
            if isinstance(got, str):
                blocker = got
            else:
                self.frozen = got
                self.tail, self.val_features, self.val_labels = got.tail, got.val_features, got.val_labels
                result.path, result.feature_hits = "frozen-features", got.hits
                result.path_note = (f"body run once: {len(got.train_views)} augmented view(s) per training image cached"
                                    + (f"; {got.hits} of {got.hits + got.computed} feature sets reused from earlier runs"
                                       if got.hits else ""))
                return self._frozen_epoch
        result.path_note = blocker or ""

        def decoded(what):
            return lambda d, n: self.emit("on_progress", {"phase": "decode", "what": what, "done": d, "total": n})
        if self.val_source is None:
            self.val_source = BatchSource(self.val_samples, self.spec, False, self.infer_bs, cache_mb, pin,
                                          progress=decoded("validation images"), stop=self._stop)
        self.train_source = BatchSource(self.train_samples, self.spec, True, cfg.batch_size, cache_mb, pin,
                                        progress=decoded("training images"), stop=self._stop)
        return self._plain_epoch

    def _batches_per_epoch(self) -> int:
        return -(-len(self.train_samples) // self.cfg.batch_size)

    def _optimise(self, opt, loss) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            opt.step()

    def _run_batches(self, epoch, batches, forward, opt, criterion):
        total_loss, correct, seen, n_batches = 0.0, 0, 0, self._batches_per_epoch()
        for b, (x, y) in enumerate(batches):
            if self.stopping:
                break
            y = y.to(self.device, non_blocking=True)
            with self.autocast():
                loss, logits = compute_loss(forward(x), y, criterion)
            self._optimise(opt, loss)
            total_loss += loss.item() * y.shape[0]
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.shape[0]
            self.emit("on_batch_end", {"epoch": epoch, "batch": b + 1, "batches": n_batches, "loss": loss.item()})
        return (total_loss / max(seen, 1), correct / max(seen, 1), seen)

    def _plain_epoch(self, epoch, opt, criterion):
        train_mode(self.model)

        def forward(x):
            return self.model(x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last))
        return self._run_batches(epoch, self.train_source, forward, opt, criterion)

    @torch.inference_mode()
    def _validate(self, criterion, epoch: int = 0) -> tuple[float, float] | None:
        """(loss, accuracy) on the validation split, or None if a stop request cut it short."""
        if self.val_features is not None:
            batches = ((self.val_features[i:i + 256], self.val_labels[i:i + 256]) for i in range(0, len(self.val_labels), 256))
            net, total = self.tail, -(-len(self.val_labels) // 256)
        else:
            batches = ((x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last), y)
                       for x, y in self.val_source)
            net, total = fused_for_inference(self.model), len(self.val_source)  # this epoch's weights, BatchNorm folded in
        self.model.eval()
        total_loss, correct, n = 0.0, 0, 0
        try:
            for k, (x, y) in enumerate(batches):
                if self.stopping:
                    return None
                y = y.to(self.device)
                with self.autocast():
                    logits = net(x.to(self.device))
                total_loss += criterion(logits.float(), y).item() * y.shape[0]
                correct += (logits.argmax(1) == y).sum().item()
                n += y.shape[0]
                self.emit("on_progress", {"phase": "val", "epoch": epoch, "done": k + 1, "total": total})
        finally:
            train_mode(self.model)
        return total_loss / max(n, 1), correct / max(n, 1)

    # ---- frozen fast path (prepared by frozen_path.py) ----------------------------------
    def _frozen_epoch(self, epoch, opt, criterion):
        train_mode(self.model)
        views = self.frozen.train_views
        feats, labels = views[(epoch - 1) % len(views)], self.frozen.train_labels
        order = torch.randperm(len(labels))
        bs = self.cfg.batch_size
        batches = ((feats[order[i:i + bs]], labels[order[i:i + bs]]) for i in range(0, len(order), bs))
        return self._run_batches(epoch, batches, lambda f: self.tail(f.to(self.device, non_blocking=True)), opt, criterion)
