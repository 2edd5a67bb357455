"""Each run draws from its own generators (core/training/run_random.py): the draws are the
originals' (torchvision's crop and flip, torch's dropout and stochastic depth), and what
another thread does to torch's global generator no longer reaches a run."""
from __future__ import annotations

import copy
import threading

import torch
from torch import nn
from torchvision.ops import StochasticDepth, stochastic_depth
from torchvision.transforms import v2 as T

from core.data.batches import _normalize, train_batch
from core.data.transforms import TransformSpec
from core.training.run_random import RunRandom, drawing_from


def test_the_crop_and_flip_are_torchvisions_for_the_same_generator_state():
    spec = TransformSpec()
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 300 + 17 * k, 448 - 9 * k), dtype=torch.uint8, generator=g) for k in range(12)]
    images.append(torch.randint(0, 256, (3, 60, 600), dtype=torch.uint8, generator=g))  # the fallback crop
    torch.manual_seed(3)
    crop = T.RandomResizedCrop(spec.crop_size, interpolation=spec.mode, antialias=True)
    flip = T.RandomHorizontalFlip()
    expected = _normalize(torch.stack([flip(crop(t)) for t in images]), spec)
    assert torch.equal(train_batch(images, spec, torch.Generator().manual_seed(3)), expected)
    torch.manual_seed(3)
    assert torch.equal(train_batch(images, spec), expected)  # no generator: torch's global one


def test_dropout_and_stochastic_depth_are_torchs_for_the_same_generator_state():
    x = torch.randn(64, 32)
    model = nn.Sequential(nn.Dropout(0.3), StochasticDepth(0.4, "row")).train()
    torch.manual_seed(7)
    expected = stochastic_depth(nn.functional.dropout(x, 0.3, True), 0.4, "row", True)
    rng = RunRandom(torch.device("cpu"))
    rng.seed(7)
    torch.manual_seed(12345)  # the global generator elsewhere: not used
    with drawing_from(model, rng):
        got = model(x)
        model.eval()
        assert torch.equal(model(x), x)  # eval: the identity, as before
        model.train()
    assert torch.equal(got, expected)
    assert all("forward" not in m.__dict__ for m in model)  # the classes' forwards again


def test_a_run_is_the_same_run_while_another_thread_draws_from_the_global_generator(tiny_folders):
    from core.data.datasets import scan_dataset
    from core.models import surgery
    from core.models.zoo import ModelSpec, instantiate
    from core.training.trainer import TrainConfig, Trainer

    ds = scan_dataset(tiny_folders)
    torch.manual_seed(0)
    built = instantiate(ModelSpec("mobilenet_v3_small", 2))  # its classifier has dropout; built before any meddling
    surgery.freeze(built, "mobilenet_v3_small", 9)

    def history():
        model = copy.deepcopy(built)
        cfg = TrainConfig(epochs=2, batch_size=8, seed=4, feature_cache=False, micro_batch=8)  # decoded-image cache
        r = Trainer(model, "mobilenet_v3_small", ds.train, ds.val, TransformSpec(crop_size=32, resize_size=36), cfg,
                    torch.device("cpu")).fit()
        return [(h["train_loss"], h["val_loss"]) for h in r.history]

    alone = history()
    done = threading.Event()

    def meddler():  # what a second job's trainer did to the global generator, all the time
        while not done.wait(0.002):
            torch.manual_seed(99)
            torch.rand(1000)
    t = threading.Thread(target=meddler)
    t.start()
    try:
        beside = history()
    finally:
        done.set()
        t.join()
    assert beside == alone
