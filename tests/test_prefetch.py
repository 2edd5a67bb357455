"""Batches made ahead on a thread (core/data/prefetch.py): the same batches in the same
order, errors where they happened, and nothing left running after an early stop."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from core.data.prefetch import prefetched


def _live_producers() -> int:
    return sum(t.name == "batch-prefetch" and t.is_alive() for t in threading.enumerate())


def test_the_same_items_in_the_same_order():
    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))
    assert list(prefetched(iter([]))) == []


def test_an_error_in_the_producer_reaches_the_consumer_at_its_batch():
    def source():
        yield 1
        yield 2
        raise OSError("disk went away")
    got = []
    with pytest.raises(OSError, match="disk went away"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_ends_the_producer():
    made = []

    def endless():
        k = 0
        while True:
            made.append(k)
            yield k
            k += 1
    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    deadline = time.time() + 5
    while _live_producers() and time.time() < deadline:
        time.sleep(0.05)
    assert _live_producers() == 0
    assert len(made) <= 3 + 2 + 1  # ran at most ``depth`` (and the one in hand) ahead


def test_a_trainer_that_prefetches_trains_the_same_run(tiny_folders):
    """The trainer's prefetch (on for CUDA) changes when batches are made, not which: with
    nothing but the producer drawing random numbers (no dropout), a seed gives the same
    history with and without it."""
    from core.data.datasets import scan_dataset
    from core.data.transforms import TransformSpec
    from core.models import surgery
    from core.models.zoo import ModelSpec, instantiate
    from core.training.trainer import TrainConfig, Trainer

    ds = scan_dataset(tiny_folders)

    def history(prefetch: bool):
        torch.manual_seed(0)
        model = instantiate(ModelSpec("mobilenet_v3_small", 2))
        for name, m in list(model.named_modules()):
            for child_name, child in list(m.named_children()):
                if isinstance(child, nn.Dropout):
                    setattr(m, child_name, nn.Identity())
        surgery.freeze(model, "mobilenet_v3_small", 9)
        cfg = TrainConfig(epochs=2, batch_size=8, seed=3, fast=False, feature_cache=False, micro_batch=8)
        t = Trainer(model, "mobilenet_v3_small", ds.train, ds.val, TransformSpec(crop_size=32, resize_size=36), cfg,
                    torch.device("cpu"))
        t.prefetch = prefetch
        return [(h["train_loss"], h["val_loss"], h["val_acc"]) for h in t.fit().history]

    assert history(True) == history(False)
