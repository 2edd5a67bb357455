"""What the training loop asks of the device: a GPU must never wait for the host inside
an epoch (issue #20, finding 3).  On a CPU these counts are what a GPU would see."""
import sys
from pathlib import Path

import pytest
import torch

from core.data.batches import BatchSource
from core.data.datasets import scan_dataset
from core.data.transforms import TransformSpec
from core.models import surgery
from core.models.zoo import ModelSpec, instantiate
from core.training.trainer import TrainConfig, Trainer

SPEC = TransformSpec(crop_size=32, resize_size=36)
TRAINING = Path(__file__).resolve().parent.parent / "core" / "training"
READS = ("item", "tolist", "__float__", "__int__", "__bool__")  # each waits for the device


class _Epochs:
    def __init__(self):
        self.batches = 0

    def on_batch_end(self, info):
        self.batches += 1


@pytest.mark.parametrize("freeze", ["backbone", "none"])  # the frozen fast path, the plain one
def test_one_read_per_training_pass_and_one_per_validation(tiny_folders, monkeypatch, freeze):
    ds = scan_dataset(tiny_folders)
    torch.manual_seed(0)
    model = instantiate(ModelSpec("mobilenet_v3_small", 2))
    surgery.freeze(model, "mobilenet_v3_small", freeze)
    epochs, counter = 2, _Epochs()
    trainer = Trainer(model, "mobilenet_v3_small", ds.train, ds.val, SPEC,
                      TrainConfig(epochs=epochs, batch_size=4, micro_batch=2, feature_cache=False),
                      torch.device("cpu"), [counter])
    reads = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name):
            caller = Path(sys._getframe(1).f_code.co_filename).resolve()
            if caller.parent == TRAINING and caller.name != "features.py":  # features.py: extraction, once per run
                reads.append(f"{_name} in {caller.name}:{sys._getframe(1).f_lineno}")
            return _original(self, *args)
        monkeypatch.setattr(torch.Tensor, name, read)
    result = trainer.fit()
    monkeypatch.undo()
    assert len(result.history) == epochs and counter.batches == epochs * 4  # 16 images in batches of 4
    # Two slices per batch, 4 batches, a validation batch: 10 reads per epoch before.
    assert len(reads) == 2 * epochs, reads


def test_cached_batches_are_pinned_for_a_gpu(tiny_folders, monkeypatch):
    """From pinned memory a ``non_blocking`` copy overlaps the GPU's work; from ordinary
    memory it is synchronous whatever the flag says."""
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self)
    ds = scan_dataset(tiny_folders)
    for train in (True, False):
        source = BatchSource(ds.train, SPEC, train, 4, pin_memory=True)
        assert source.cache is not None  # the decoded-image cache (the DataLoader pins its own)
        batches = list(source)
        assert len(pinned) == 2 * len(batches)  # images and labels of every batch
        pinned.clear()
    list(BatchSource(ds.train, SPEC, True, 4))  # for a CPU: nothing pinned
    assert pinned == []
