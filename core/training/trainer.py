"""The training loop: train and val phases per epoch, events for listeners, a stop signal.

Listeners (the CLI's printer, the dashboard, the run writer) implement any of
``on_run_start(info)``, ``on_batch_end(info)``, ``on_epoch_end(record)``,
``on_run_end(result)``.  ``request_stop()`` ends the run between batches; what was
learned so far, and the best weights, are kept.

A schedule (``schedules.py``) divides the epochs into phases: ``standard`` is one,
``fine_tune`` trains the head alone first and then unfreezes with discriminative rates.
Each phase picks its path; ``on_phase_start`` marks a change.

Two ways through an epoch, chosen automatically per phase and with the same meaning
(the passes themselves are in ``passes.py``):
* plain: full forward/backward over batches from ``data.batches.BatchSource``;
* frozen fast path (``features.py``, ``frozen_path.py``): the frozen body runs once, the
  head trains on its cached output, shared across runs by ``feature_cache.py``.  Used
  when only the head trains and the equivalence check passes.

A stop request takes effect within a batch in every phase (decoding, feature
extraction, training, validation); a run stopped before its first validated epoch
keeps nothing.  Besides the events above, ``on_progress({"phase", "done", "total"})``
reports decoding, feature extraction and validation.  ``on_batch_end``'s ``loss`` is a
0-dim tensor on the training device: ``float()`` it if you need the number (the LR
finder does); reading it waits for the GPU, so the loop itself never does (``tally.py``).

Random numbers (crops, shuffles, dropout) come from the run's own generators
(``run_random.py``), seeded per epoch: a run next to another job is the same run as alone.

Validation runs in fp32 whatever ``amp`` says: the best epoch is chosen, and its
accuracy recorded, on the numbers Predict, Compare's evaluation and the exports compute
(all fp32); under bf16 autocast they differed.  Training keeps autocast, where the speed is.

A GPU out-of-memory error ends the run as ``oom.OutOfMemory``, a bad-input error that
names the batch size and a smaller one, with the GPU's cache emptied.
"""
from __future__ import annotations

import threading
import time
import torch
from torch import nn

from core.training import distributed, features, frozen_path, micro_batch, oom, schedules
from core.training.run_random import RunRandom, drawing_from
from core.device import amp_context, inference_batch_size, needs_grad_scaler
from core.training.passes import Passes, compute_loss  # noqa: F401 - compute_loss is also imported from here
from core.data.batches import BatchSource, Stopped
from core.models.surgery import freeze, keep_bn_statistics, stages_of, train_mode
from core.data.transforms import TransformSpec
from core.training.train_config import TrainConfig, TrainResult  # noqa: F401 - also imported from here


class Trainer(Passes):
    def __init__(self, model: nn.Module, arch: str, train_samples, val_samples, spec: TransformSpec,
                 cfg: TrainConfig, device: torch.device, listeners=(), stop: threading.Event | None = None,
                 feature_cache=None, freeze=None, ranks: distributed.Ranks | None = None):
        self.model, self.arch, self.spec, self.cfg, self.device = model, arch, spec, cfg, device
        # Under torchrun: this process's rank (distributed.py); SINGLE makes every hook a no-op.
        self.ranks = ranks or distributed.SINGLE
        self.ddp, self.train_sampler = None, None  # plain path: the DDP wrapper, the epoch's shard
        self.train_samples, self.val_samples = train_samples, val_samples
        self.listeners = list(listeners)
        self.base_freeze = freeze if freeze is not None else "none"  # the experiment's strategy (for the schedule)
        self.train_source = self.val_source = None
        self.path, self.micro, self.bn_frozen = "plain", 0, False
        self.infer_bs = inference_batch_size(device, arch)  # eval-mode batches (validation, features)
        self.prefetch = device.type == "cuda"  # batches made ahead on a thread (data/prefetch.py says why not on CPU)
        self.rng = RunRandom(device)  # this run's crops, shuffles and dropout: no other job draws from it
        self.activity = "preparing"  # what runs now, for an out-of-memory message
        self._stop = stop or threading.Event()  # a job's one stop signal, shared by its runs
        self.autocast = amp_context(device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(device, cfg.amp) else None
        if feature_cache is None and cfg.feature_cache:
            from core.training.feature_cache import default_cache
            feature_cache = default_cache()
        self.feature_cache = feature_cache if cfg.feature_cache else None
        self.result: TrainResult | None = None  # fit's result so far (read after a failure)
        self.feature_pool = None  # frozen_path.FeaturePool: a subset's features are rows of these (data_efficiency.py)

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

    def _stop_agreed(self) -> bool:
        """Under torchrun every rank must leave the loop at the same batch, or the others
        wait in a collective: a stop counts once the ranks have voted (one tiny all-reduce)."""
        return self.ranks.any(self.stopping) if self.ranks.active else self.stopping

    # ---- the loop --------------------------------------------------------------------
    def fit(self) -> TrainResult:
        return self.guarded(self._fit)

    def guarded(self, fn, *args, **kwargs):
        """``fn(...)``, a GPU out-of-memory error turned into ``oom.OutOfMemory`` (the LR finder
        runs through here too)."""
        try:
            return fn(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            pass  # leave the handler first: the error's traceback holds the failed step's tensors
        self.model.zero_grad(set_to_none=True)
        oom.free_memory()
        raise oom.OutOfMemory(oom.message(self.arch, self.activity, self.cfg.batch_size, self.micro, self.infer_bs))

    def _fit(self) -> TrainResult:
        with drawing_from(self.model, self.rng):  # dropout masks from this run's generator
            return self._fit_phases()

    def _fit_phases(self) -> TrainResult:
        cfg, t0 = self.cfg, time.perf_counter()
        self.rng.seed(cfg.seed)
        self.model.to(self.device, memory_format=torch.channels_last)
        # What the experiment left trainable: phases freeze more, never less.
        self.base_trainable = {n: p.requires_grad for n, p in self.model.named_parameters()}
        phases = schedules.plan(cfg, self.base_freeze, len(stages_of(self.model, self.arch)))
        result = self.result = TrainResult()  # readable after a failure: what was validated so far
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        epoch, started = 0, False
        for k, phase in enumerate(phases):
            self.bn_frozen = phase.bn_frozen
            self._apply_freeze(phase.freeze)
            try:
                step = self._prepare(result, first=k == 0)
            except Stopped:  # nothing trained in this phase yet
                if self.ranks.active:  # ranks stop preparing at different points: abort, as distributed.py reports
                    raise KeyboardInterrupt from None
                result.stopped, result.stop_phase = True, "preparing"
                break
            if k == 0:
                result.prep_seconds = time.perf_counter() - t0
            opt = schedules.make_optimizer(schedules.discriminative_groups(self.model, self.arch, phase.lr, phase.spread), cfg)
            sched = schedules.make_scheduler(opt, phase, cfg, self._batches_per_epoch())
            per_step = sched if phase.scheduler in schedules.PER_STEP else None
            result.phases.append({**phase.to_dict(), "path": self.path, "micro_batch": self.micro})
            if not started:
                started = True
                self.emit("on_run_start", {"epochs": cfg.epochs, "path": result.path, "path_note": result.path_note,
                                           "num_train": len(self.train_samples), "num_val": len(self.val_samples),
                                           "batches_per_epoch": self._batches_per_epoch(),
                                           "prep_seconds": result.prep_seconds, "feature_hits": result.feature_hits,
                                           "phases": [p.to_dict() for p in phases]})
            else:
                self.emit("on_phase_start", {"phase": phase.name, "path": self.path, "epoch": epoch + 1})
            for _ in range(phase.epochs):
                epoch += 1
                if not self._epoch(epoch, phase, step, opt, sched, per_step, criterion, result):
                    break
            if result.stop_phase:
                break
        if not started:  # stopped before anything trained: nothing to keep
            result.seconds = result.prep_seconds = time.perf_counter() - t0
            self.emit("on_run_end", result)
            return result
        result.stopped = bool(result.stop_phase)  # a stop that came after the last epoch cut nothing
        result.seconds = time.perf_counter() - t0
        self.emit("on_run_end", result)
        return result

    def _epoch(self, epoch, phase, step, opt, sched, per_step, criterion, result) -> bool:
        """One epoch: train, validate, record.  False when a stop request ended it."""
        te = time.perf_counter()
        # Augmentations, shuffles, dropout (under torchrun: per rank on the plain path, see distributed.py).
        self.rng.seed(self.cfg.seed * 100_003 + epoch + self.ranks.seed_offset(self.path))
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)  # a new shuffle, the same on every rank
        lr = opt.param_groups[-1]["lr"]  # the head's rate as the epoch starts
        train_loss, train_acc, seen = step(epoch, opt, criterion, per_step)
        if seen == 0:  # stopped before the first batch of this epoch
            result.stop_phase = "training"
            return False
        tv = time.perf_counter()
        val = self._validate(criterion, epoch)
        if val is None:  # stopped mid-validation: this epoch's weights are unvalidated, not kept
            result.stop_phase = "validation"
            return False
        val_loss, val_acc = val
        if sched is not None and per_step is None:
            sched.step()
        secs = time.perf_counter() - te
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                  "val_acc": val_acc, "lr": lr, "seconds": secs, "val_seconds": time.perf_counter() - tv,
                  "images_per_s": seen / max(tv - te, 1e-9), "partial": seen < len(self.train_samples),
                  "phase": phase.name, "path": self.path}
        result.history.append(record)
        if val_acc > result.best_val_acc or result.best_state is None:
            result.best_val_acc, result.best_epoch = val_acc, epoch
            result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.emit("on_epoch_end", record)
        if self._stop_agreed():
            result.stop_phase = "training"
            return False
        return True

    def _train_mode(self) -> None:
        train_mode(self.model)
        if self.bn_frozen:
            keep_bn_statistics(self.model)

    def _apply_freeze(self, strategy) -> None:
        """The phase's freeze, intersected with what the experiment left trainable."""
        if strategy is not None:
            freeze(self.model, self.arch, strategy)
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.base_trainable[n] and (strategy is None or p.requires_grad))
        self._train_mode()

    def _prepare(self, result: TrainResult, first: bool = True):
        """Choose this phase's path and get its data ready; returns the epoch function.
        Sources decoded for an earlier phase are reused."""
        cfg = self.cfg
        blocker = features.fast_path_blocker(self.model, self.arch) if cfg.fast else "fast paths off"
        pin = self.device.type == "cuda"
        cache_mb = cfg.cache_mb if cfg.fast else 0
        self.val_features = None
        if blocker is None:
            self.activity = "extracting features"
            if self.ranks.active:  # each rank runs the body over its shard; features gathered
                got = frozen_path.prepare_sharded(self.ranks, self.model, self.arch, self.train_samples,
                                                  self.val_samples, self.spec, cfg, self.device, self.autocast,
                                                  self.infer_bs, self.feature_cache, self.emit, self._stop)
            else:
                got = frozen_path.prepare(self.model, self.arch, self.train_samples, self.val_samples, self.spec, cfg,
                                          self.device, self.autocast, self.infer_bs, self.feature_cache, self.emit,
                                          self._stop, pool=self.feature_pool)
            if isinstance(got, str):
                blocker = got
            else:
                self.frozen, self.path, self.micro, self.ddp = got, "frozen-features", 0, None
                self.tail, self.val_features, self.val_labels = got.tail, got.val_features, got.val_labels
                if got.val_source is not None:
                    self.val_source = got.val_source
                result.path, result.feature_hits = "frozen-features", result.feature_hits + got.hits
                result.path_note = (f"body run once: {len(got.train_views)} augmented view(s) per training image cached"
                                    + (f"; {got.hits} of {got.hits + got.computed} feature sets reused from earlier runs"
                                       if got.hits else ""))
                return self._frozen_epoch
        self.activity = "preparing"
        if first:
            result.path_note = blocker or ""
        else:
            result.path = f"{result.path}, then plain" if result.path != "plain" else "plain"

        def decoded(what):
            return lambda d, n: self.emit("on_progress", {"phase": "decode", "what": what, "done": d, "total": n})
        if self.val_source is None:  # under torchrun: this rank's shard
            self.val_source = BatchSource(self.ranks.shard(self.val_samples), self.spec, False, self.infer_bs, cache_mb,
                                          pin, progress=decoded("validation images"), stop=self._stop)
        if self.train_source is None:  # under torchrun: this rank's share, decoded here alone
            share = self.ranks.train_share(len(self.train_samples), cfg.seed)
            mine = self.train_samples if share is None else [self.train_samples[i] for i in share]
            self.train_sampler = self.ranks.train_sampler(len(self.train_samples), cfg.seed)
            self.train_source = BatchSource(mine, self.spec, True, self.ranks.local_batch(cfg.batch_size),
                                            cache_mb, pin, progress=decoded("training images"), stop=self._stop,
                                            sampler=self.train_sampler, generator=self.rng.cpu)
        self.path = "plain"
        self.micro = self.ranks.from_main(self._micro_batch)  # measured once, the same slices on every rank
        self.ddp = self.ranks.wrap(self.model)  # what this phase trains
        result.micro_batch = self.micro
        return self._plain_epoch

    def _micro_batch(self) -> int:
        batch = self.ranks.local_batch(self.cfg.batch_size)
        if self.cfg.micro_batch > 0:
            return min(self.cfg.micro_batch, batch)
        num_classes = 1 + max(y for _, y in self.train_samples)
        # The first run of a model on a machine times its micro-batch sizes (~10 s on 2 cores):
        # say so, or the page would still read "reading images 245/245" meanwhile.
        self.emit("on_progress", {"phase": "tune", "done": 0, "total": 1})
        micro, _ = micro_batch.choose(self.model, self.device, batch, self.spec.crop_size, num_classes,
                                      self.autocast, self.cfg.amp == "on")
        return micro

    def _batches_per_epoch(self) -> int:
        if self.path == "plain":  # per rank: its padded shard in local batches (one rank: all, in whole ones)
            return -(-self.ranks.shard_len(len(self.train_samples)) // self.ranks.local_batch(self.cfg.batch_size))
        return -(-len(self.train_samples) // self.cfg.batch_size)
