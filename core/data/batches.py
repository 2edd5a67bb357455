"""Batches for training and evaluation, from a decoded-image cache when it fits.

The tutorial loop decodes every JPEG every epoch.  Here each image is decoded once and
resized to what the transforms need, then kept as a uint8 tensor: evaluation images at
the eval resize (so center crop + normalise gives exactly the PIL pipeline's tensor),
training images at a "presize" twice the crop, cropped and flipped on
tensors each epoch (fastai's presizing).  Past the memory cap, batches come from a
plain DataLoader over PIL transforms instead: slower, same meaning.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset as TorchDataset
from torchvision.transforms.v2 import functional as F

from core.data.images import load_rgb
from core.data.transforms import TransformSpec, eval_transform, train_transform

DEFAULT_CACHE_MB = 4096


def workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _resized_shape(size: tuple[int, int], short: int) -> tuple[int, int]:
    w, h = size
    if w <= h:
        return short, int(short * h / w)
    return int(short * w / h), short


def estimate_bytes(paths: list[str], short: int) -> int:
    """Bytes the cache would take, from image headers only (no decoding)."""
    total = 0
    for p in paths:
        with Image.open(p) as im:
            w, h = _resized_shape(im.size, short)
        total += 3 * w * h
    return total


def _decode_resized(path: str, short: int, spec: TransformSpec, upscale: bool = True) -> torch.Tensor:
    img = load_rgb(path)
    # Same call as T.Resize(short) on a PIL image, so eval tensors match the PIL path exactly.
    if upscale or min(img.size) > short:
        img = F.resize(img, [short], interpolation=spec.mode, antialias=True)
    return F.pil_to_tensor(img)


class Stopped(Exception):
    """A stop request arrived while preparing data: nothing half-made is kept."""


class DecodedImages:
    """uint8 CHW tensors of a list of (path, label) samples, resized so the shorter side is ``short``.

    Decoded in chunks so ``progress(done, total)`` can report and ``stop`` (a
    ``threading.Event``) can end it within a chunk's time."""

    CHUNK = 16

    def __init__(self, samples: list[tuple[str, int]], short: int, spec: TransformSpec, upscale: bool = True,
                 progress=None, stop=None):
        self.short, self.spec = short, spec
        self.labels = torch.tensor([label for _, label in samples])
        self.images = []
        with ThreadPoolExecutor(max_workers=workers()) as pool:  # Pillow decodes without the GIL
            for start in range(0, len(samples), self.CHUNK):
                if stop is not None and stop.is_set():
                    raise Stopped
                chunk = samples[start:start + self.CHUNK]
                self.images += pool.map(lambda s: _decode_resized(s[0], short, spec, upscale), chunk)
                if progress:
                    progress(len(self.images), len(samples))

    def __len__(self) -> int:
        return len(self.images)


def _normalize(batch_uint8: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    # The very ops of the PIL pipeline's tail, so cached and plain tensors are bit-identical.
    return F.normalize(F.to_dtype(batch_uint8, torch.float32, scale=True), list(spec.mean), list(spec.std))


def eval_batch(images: list[torch.Tensor], spec: TransformSpec) -> torch.Tensor:
    return _normalize(torch.stack([F.center_crop(t, [spec.crop_size]) for t in images]), spec)


_SCALE, _LOG_RATIO = (0.08, 1.0), torch.log(torch.tensor((3 / 4, 4 / 3)))


def _crop_and_flip(t: torch.Tensor, spec: TransformSpec, g: torch.Generator) -> torch.Tensor:
    """torchvision v2's ``RandomResizedCrop`` then ``RandomHorizontalFlip``, drawing the same
    numbers in the same order, from ``g`` (tests/test_run_random.py holds it to v2's output)."""
    height, width = t.shape[-2:]
    area = height * width
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(*_SCALE, generator=g).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(_LOG_RATIO[0], _LOG_RATIO[1], generator=g)).item()
        w, h = int(round(math.sqrt(target_area * aspect_ratio))), int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
            break
    else:  # central crop, as torchvision falls back
        in_ratio = width / height
        if in_ratio < 3 / 4:
            w, h = width, int(round(width / (3 / 4)))
        elif in_ratio > 4 / 3:
            w, h = int(round(height * (4 / 3))), height
        else:
            w, h = width, height
        i, j = (height - h) // 2, (width - w) // 2
    out = F.resized_crop(t, i, j, h, w, [spec.crop_size, spec.crop_size], interpolation=spec.mode, antialias=True)
    return F.horizontal_flip(out) if torch.rand(1, generator=g) < 0.5 else out


def train_batch(images: list[torch.Tensor], spec: TransformSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomResizedCrop + flip per image, on uint8 tensors, drawing from ``generator`` (a
    run's own, ``training/run_random.py``; None: torch's global one)."""
    g = generator if generator is not None else torch.default_generator
    return _normalize(torch.stack([_crop_and_flip(t, spec, g) for t in images]), spec)


class _PILSamples(TorchDataset):
    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(load_rgb(path)), label


class BatchSource:
    """Yields normalised (x, y) batches for one split, cached or through PIL.

    ``train=True`` shuffles and augments; ``train=False`` gives the evaluation view in
    order.  Randomness comes from torch's global RNG, which the trainer seeds per epoch.
    A ``sampler`` (torchrun: ``shard_sampler.ShareShuffle`` over this process's share,
    which is then all ``samples`` holds; its epoch set by the trainer) replaces the shuffle.
    """

    def __init__(self, samples, spec: TransformSpec, train: bool, batch_size: int, cache_mb: int = DEFAULT_CACHE_MB,
                 pin_memory: bool = False, progress=None, stop=None, sampler=None, generator=None):
        self.samples, self.spec, self.train, self.batch_size = samples, spec, train, batch_size
        self.sampler = sampler
        self.generator = generator  # shuffles and crops (a run's own; None: torch's global one)
        # For a GPU: batches in page-locked memory, so the trainer's non_blocking copy is one
        # (from ordinary memory it is synchronous); the DataLoader below pins its own.
        self.pin_memory = pin_memory
        # Training crops are taken from a presized copy: twice the crop, never upscaled, so
        # RandomResizedCrop sees (nearly) the detail of the original photo.
        short = spec.resize_size if not train else max(spec.resize_size, 2 * spec.crop_size)
        self.cache: DecodedImages | None = None
        self.cache_reason = ""
        if cache_mb > 0 and estimate_bytes([p for p, _ in samples], short) <= cache_mb * 2**20:
            self.cache = DecodedImages(samples, short, spec, upscale=not train, progress=progress, stop=stop)
        else:
            self.cache_reason = f"over the decoded-cache cap of {cache_mb} MB" if cache_mb > 0 else "cache disabled"
            tf = train_transform(spec) if train else eval_transform(spec)
            n = min(4, workers())
            # The generator draws the shuffle and each epoch's worker seeds (the crops in the workers).
            self.loader = DataLoader(_PILSamples(samples, tf), batch_size=batch_size, shuffle=train and sampler is None,
                                     sampler=sampler, num_workers=n, persistent_workers=n > 0, pin_memory=pin_memory,
                                     generator=generator)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler if self.sampler is not None else self.samples) / self.batch_size)

    def __iter__(self):
        if self.cache is None:
            yield from self.loader
            return
        n = len(self.cache)
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler))
        else:
            order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size].tolist()  # a host tensor: no device sync
            images = [self.cache.images[i] for i in idx]
            x = train_batch(images, self.spec, self.generator) if self.train else eval_batch(images, self.spec)
            y = self.cache.labels[idx]
            yield (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)
