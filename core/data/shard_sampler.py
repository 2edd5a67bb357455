"""Training images split once among torchrun's processes, shuffled within each share.

torch's ``DistributedSampler`` deals a fresh shuffle of the whole training set to the
ranks every epoch, so every rank needs every image and decodes all of them (N processes,
N times the decoding and N copies of the decoded cache).  Here the split is made once,
from the run's seed: rank r keeps the images at positions r, r + world, ... of one seeded
permutation (mixed classes: ImageFolder lists them class by class), decodes only those,
and shuffles them anew each epoch (``set_epoch``), as WebDataset's shard-local shuffling
does.  Every image is still seen once per epoch; each step's global batch is a random
draw from every share.  Shares are padded to equal length by repeating the share's own
first images, so every rank takes the same number of steps (at most one repeat each).
"""
from __future__ import annotations

import torch


def share_of(n: int, world: int, rank: int, seed: int) -> list[int]:
    """The dataset indices ``rank`` trains on for the whole run (disjoint, covering ``range(n)``)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[rank::world].tolist()


def share_size(n: int, world: int, rank: int) -> int:
    """``len(share_of(n, world, rank, seed))`` for any seed, without drawing the permutation."""
    return len(range(rank, n, world))


class ShareShuffle(torch.utils.data.Sampler):
    """Positions 0..len(share)-1 in a new order each epoch, padded to ``length``."""

    def __init__(self, share_len: int, length: int, seed: int, rank: int):
        if share_len < 1:
            raise ValueError("a process has no training images: use fewer processes than images")
        self.share_len, self.length, self.seed, self.rank, self.epoch = share_len, length, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + self.rank)
        order = torch.randperm(self.share_len, generator=g).tolist()
        while len(order) < self.length:
            order += order[:self.length - len(order)]
        return iter(order)
