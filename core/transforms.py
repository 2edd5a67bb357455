"""Image transforms that follow the weights, as torchvision's ``weights.transforms()`` say.

Training: RandomResizedCrop + horizontal flip + normalise.  Evaluation: resize the
shorter side, center crop, normalise.  The same spec drives the plain PIL pipeline and
the tensor pipeline of the decoded-image cache (``fastdata.py``), so the two agree.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image, ImageDraw
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


def augmented_grid(samples: list[tuple[str, int]], classes: list[str], spec: TransformSpec,
                   n: int = 8, columns: int = 4, seed: int | None = None, tile: int = 160) -> Image.Image:
    """A grid of ``n`` augmented training samples, each captioned with its label."""
    from .images import ImageReadError, load_rgb

    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    idx = torch.randperm(len(samples), generator=g)[:n].tolist()
    tf = train_transform(spec)
    tiles = []
    state = torch.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    try:
        for i in idx:
            path, label = samples[i]
            try:
                img = tensor_to_pil(tf(load_rgb(path, draft_size=spec.resize_size)), spec).resize((tile, tile))
            except ImageReadError:
                continue
            tiles.append((img, classes[label]))
    finally:
        torch.set_rng_state(state)
    rows = max(1, -(-len(tiles) // columns))
    caption = 22
    grid = Image.new("RGB", (columns * tile, rows * (tile + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for k, (img, label) in enumerate(tiles):
        x, y = (k % columns) * tile, (k // columns) * (tile + caption)
        grid.paste(img, (x, y))
        draw.text((x + 4, y + tile + 4), label[:24], fill=(20, 20, 20))
    return grid
