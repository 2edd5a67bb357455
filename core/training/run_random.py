"""One run's random numbers, drawn from its own generators instead of torch's global ones.

Two jobs training at once in one process (the queue's workers on a GPU) used to share
torch's global generators: one run's crops, shuffles and dropout masks depended on when
the other drew, so a run next to another job differed from the same run alone, and a
feature-cache entry computed meanwhile could hold views no run alone would draw.  Here a
run owns a CPU generator (crops, flips, shuffles, the frozen path's views) and, on a GPU,
one of the GPU's (dropout and stochastic depth on GPU tensors), seeded exactly where the
trainer used to seed the global ones.

The draws are torchvision's and torch's own, with a generator argument: the crop is v2's
``RandomResizedCrop`` + ``RandomHorizontalFlip`` (``data/batches.py``) and the dropout
below is ATen's CPU dropout (``empty_like(x).bernoulli_(1 - p).div_(1 - p)``, then
``x * noise``); tests hold both to the originals' output for the same generator state.

What still draws from the global generator: building a model (weight init of a new
head), which ``models.zoo`` serialises with a lock, and code outside training (Inside,
Clean's galleries) that seeds its own ``random.Random``.
"""
from __future__ import annotations

import types
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.ops import StochasticDepth


class RunRandom:
    def __init__(self, device: torch.device):
        self.cpu = torch.Generator()
        self.gpu = None
        if device.type in ("cuda", "mps"):
            try:
                self.gpu = torch.Generator(device=device)
            except (RuntimeError, TypeError):  # an older build without device generators: the global one
                self.gpu = None

    def seed(self, value: int) -> None:
        self.cpu.manual_seed(value)
        if self.gpu is not None:
            self.gpu.manual_seed(value)

    def for_tensor(self, t: torch.Tensor) -> torch.Generator | None:
        """The generator for random numbers made on ``t``'s device (None: torch's default)."""
        return self.cpu if t.device.type == "cpu" else self.gpu


def _dropout(rng: RunRandom):
    def forward(self: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if not self.training or p == 0 or x.numel() == 0:
            return x
        if p == 1:
            return x.mul_(0) if self.inplace else x * 0
        noise = torch.empty_like(x).bernoulli_(1 - p, generator=rng.for_tensor(x)).div_(1 - p)
        return x.mul_(noise) if self.inplace else x * noise
    return forward


def _stochastic_depth(rng: RunRandom):
    def forward(self: StochasticDepth, x: torch.Tensor) -> torch.Tensor:  # torchvision.ops.stochastic_depth
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival, generator=rng.for_tensor(x))
        if survival > 0.0:
            noise.div_(survival)
        return x * noise
    return forward


@contextmanager
def drawing_from(model: nn.Module, rng: RunRandom):
    """While inside, ``model``'s dropout (``nn.Dropout``) and stochastic depth draw from
    ``rng``.  Other random layers (Dropout2d, AlphaDropout: no torchvision classifier has
    one) keep torch's global generator."""
    patched = []
    # Bound methods, so a deep copy made meanwhile (validation's folded model) reads its own
    # ``training`` flag; the generator is shared, as the copy runs in eval mode anyway.
    dropout, depth = _dropout(rng), _stochastic_depth(rng)
    for m in model.modules():
        if type(m) is nn.Dropout:
            m.forward = types.MethodType(dropout, m)
        elif isinstance(m, StochasticDepth):
            m.forward = types.MethodType(depth, m)
        else:
            continue
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward  # the class's forward again
