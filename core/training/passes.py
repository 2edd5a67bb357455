"""What one pass over the data does, for ``Trainer`` (a mixin: the state is the trainer's).

* ``_run_batches``: one optimiser step per batch, forward/backward on micro-batch
  slices with gradients accumulated, under the run's autocast;
* ``_plain_epoch``: full forward/backward over decoded batches;
* ``_frozen_epoch``: the head alone on cached body outputs (``frozen_path.py``);
* ``_validate``: the validation split in fp32 (see ``trainer.py``'s docstring).

Host and device meet as little as possible, for GPUs: batches go over from pinned
memory (``device.to_device``), cached features go over once per epoch when they fit,
and loss and accuracy are summed on the device and read once per pass (``tally.py``).
On CUDA (``self.prefetch``) image batches are made ahead on a thread (``data/prefetch.py``).
On a CPU none of this changes a number.
"""
from __future__ import annotations

import torch

from core.data.prefetch import prefetched
from core.device import to_device
from core.models.inference import fused_for_inference
from core.training.tally import Tally


def compute_loss(out, y, criterion) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and main logits; GoogLeNet/Inception return auxiliary logits while training."""
    if isinstance(out, tuple):
        main, aux = out[0], [a for a in out[1:] if a is not None]
        return criterion(main, y) + 0.4 * sum(criterion(a, y) for a in aux), main
    return criterion(out, y), out


class Passes:
    def _backward(self, loss) -> None:
        if self.scaler:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _step(self, opt) -> None:
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def _run_batches(self, epoch, batches, forward, opt, criterion, per_step, micro: int = 0):
        """Train over ``batches``: one optimiser step per batch, forward/backward on slices
        of ``micro`` images (the whole batch when 0), gradients accumulated.  Loss and
        correct counts are summed on the device and read once, at the end (``tally.py``)."""
        tally, n_batches = Tally(self.device), self._batches_per_epoch()
        for b, (x, y) in enumerate(batches):
            if self._stop_agreed():
                break
            y = to_device(y, self.device)
            n = y.shape[0]
            size = micro or n
            opt.zero_grad(set_to_none=True)
            batch_loss = None
            for s in range(0, n, size):
                ys = y[s:s + size]
                with self.ranks.no_sync(self.ddp, last=s + size >= n), self.autocast():
                    loss, logits = compute_loss(forward(x[s:s + size]), ys, criterion)
                    # Mean over the slice, weighted by its share: the batch's mean loss and gradient.
                    self._backward(loss * (ys.shape[0] / n) if size < n else loss)
                batch_loss = tally.slice(loss, logits, ys, batch_loss)
            self._step(opt)
            if per_step is not None:
                per_step.step()
            tally.batch(batch_loss, n)
            self.emit("on_batch_end", {"epoch": epoch, "batch": b + 1, "batches": n_batches, "loss": batch_loss / n})
        total_loss, correct, seen = tally.totals()
        if self.path == "plain":  # ranks trained on different shards: sums over all of them
            total_loss, correct, seen = self.ranks.sum(total_loss, correct, seen)
            seen = int(seen)
        return (total_loss / max(seen, 1), correct / max(seen, 1), seen)

    def _plain_epoch(self, epoch, opt, criterion, per_step=None):
        self.activity = "training"
        self._train_mode()
        net = self.model if self.ddp is None else self.ddp  # DDP under torchrun: gradients averaged over ranks

        def forward(x):
            return net(to_device(x, self.device).contiguous(memory_format=torch.channels_last))
        source = prefetched(self.train_source) if self.prefetch else self.train_source
        return self._run_batches(epoch, source, forward, opt, criterion, per_step, self.micro)

    @torch.inference_mode()
    def _validate(self, criterion, epoch: int = 0) -> tuple[float, float] | None:
        """(loss, accuracy) on the validation split, or None if a stop request cut it short.
        In fp32, without autocast: see the module docstring."""
        if self.val_features is not None:
            feats = self._resident(self.val_features)
            labels = self.val_labels.to(feats.device)
            batches = ((feats[i:i + 256], labels[i:i + 256]) for i in range(0, len(labels), 256))
            net, total = self.tail, -(-len(labels) // 256)
        else:
            source = prefetched(self.val_source) if self.prefetch else self.val_source
            batches = ((to_device(x, self.device).contiguous(memory_format=torch.channels_last), y) for x, y in source)
            net, total = fused_for_inference(self.model), len(self.val_source)  # this epoch's weights, BatchNorm folded in
        if self.ranks.active and self._stop_agreed():  # ranks' shards differ by a batch: vote once, before
            return None
        self.model.eval()
        self.activity = "validation"
        tally = Tally(self.device)
        try:
            for k, (x, y) in enumerate(batches):
                if self.stopping and not self.ranks.active:
                    return None
                y = to_device(y, self.device)
                logits = net(to_device(x, self.device))
                tally.add(criterion(logits.float(), y), logits, y)
                self.emit("on_progress", {"phase": "val", "epoch": epoch, "done": k + 1, "total": total})
        finally:
            self._train_mode()
        total_loss, correct, n = tally.totals()
        if self.val_features is None:  # plain path: each rank validated its shard
            total_loss, correct, n = self.ranks.sum(total_loss, correct, n)
        return total_loss / max(n, 1), correct / max(n, 1)

    def _frozen_epoch(self, epoch, opt, criterion, per_step=None):
        self.activity = "training"
        self._train_mode()
        views = self.frozen.train_views
        feats = self._resident(views[(epoch - 1) % len(views)])
        labels = self.frozen.train_labels.to(feats.device)
        order = torch.randperm(len(labels), generator=self.rng.cpu).to(feats.device)  # on the host: the same order on any device
        bs = self.cfg.batch_size
        batches = ((feats[order[i:i + bs]], labels[order[i:i + bs]]) for i in range(0, len(order), bs))
        return self._run_batches(epoch, batches, lambda f: self.tail(to_device(f, self.device)), opt, criterion,
                                 per_step)

    def _resident(self, t: torch.Tensor) -> torch.Tensor:
        """Cached features for an epoch: on a GPU copied over in one piece when
        they take under a quarter of its free memory, so head steps never wait on the host;
        else left on the host, each batch going over pinned (``to_device``)."""
        if self.device.type != "cuda":
            return t
        free, _ = torch.cuda.mem_get_info(self.device)
        return t.to(self.device) if t.numel() * t.element_size() < free / 4 else t
