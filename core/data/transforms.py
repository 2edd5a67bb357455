"""Image transforms that follow the weights, as torchvision's ``weights.transforms()`` say.

Training: RandomResizedCrop + horizontal flip + normalise.  Evaluation: resize the
shorter side, center crop, normalise.  The same spec drives the plain PIL pipeline and
the tensor pipeline of the decoded-image cache (``data/batches.py``), so the two agree.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformSpec:
    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    @classmethod
    def from_weights(cls, weights) -> "TransformSpec":
        """Read size/mean/std off a torchvision weights enum (ImageNet defaults otherwise)."""
        try:
            t = weights.transforms()
            return cls(int(t.crop_size[0]), int(t.resize_size[0]), tuple(t.mean), tuple(t.std), t.interpolation.value)
        except (AttributeError, TypeError, IndexError):
            return cls()

    @classmethod
    def from_dict(cls, d: dict) -> "TransformSpec":
        return cls(d["crop_size"], d["resize_size"], tuple(d["mean"]), tuple(d["std"]), d.get("interpolation", "bilinear"))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)


def _to_float(spec: TransformSpec) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)]


def train_transform(spec: TransformSpec) -> T.Compose:
    return T.Compose([T.RandomResizedCrop(spec.crop_size, interpolation=spec.mode, antialias=True),
                      T.RandomHorizontalFlip(), *_to_float(spec)])


def eval_transform(spec: TransformSpec) -> T.Compose:
    return T.Compose([T.Resize(spec.resize_size, interpolation=spec.mode, antialias=True),
                      T.CenterCrop(spec.crop_size), *_to_float(spec)])


def denormalize(x: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    """Normalised CHW float tensor back to a displayable [0, 1] image."""
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (x.cpu() * std + mean).clamp(0, 1)


def tensor_to_pil(x: torch.Tensor, spec: TransformSpec) -> Image.Image:
    arr = (denormalize(x, spec) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr)


def _random_resized_crop_box(w: int, h: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, drawing from ``rng`` instead of torch's
    global generator (which a training job in another thread is using)."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def augmented_samples(samples: list[tuple[str, int]], classes: list[str], spec: TransformSpec,
                      n: int = 8, seed: int = 0, tile: int = 160) -> list[tuple[Image.Image, str]]:
    """``n`` training samples as the network sees them (RandomResizedCrop + flip), as
    (image, class name).  Captions are left to the browser, which has fonts for every
    script; a label drawn into the pixels would need a server font with CJK, Arabic and
    emoji glyphs."""
    from torchvision.transforms.v2 import functional as F

    from core.data.images import ImageReadError, load_rgb

    rng = random.Random(seed)
    out = []
    for path, label in rng.sample(samples, min(n, len(samples))):
        try:
            img = load_rgb(path, draft_size=spec.resize_size)
        except ImageReadError:
            continue
        top, left, ch, cw = _random_resized_crop_box(img.width, img.height, rng)
        img = F.resized_crop(img, top, left, ch, cw, [tile, tile], interpolation=spec.mode, antialias=True)
        out.append((F.horizontal_flip(img) if rng.random() < 0.5 else img, classes[label]))
    return out
