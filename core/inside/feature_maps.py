"""What each stage of the body outputs, for one photo or pooled over many.

Stages come from the family table (``families.py`` through ``surgery.stages_of``): a
stage's output is the output of its last module.  Layouts differ by family, so every
output is brought to one of two shapes here:

* a map, batch x channels x height x width: convolutional stages as they are; Swin's
  channels-last stages transposed; a ViT's token sequence without its class token, laid
  out on its patch grid;
* a vector per image (``pooled``): the map averaged over its positions, or a stage that
  already outputs vectors (a classifier stage's Linear) as it is.

Stages that do not run in eval mode (GoogLeNet's and Inception's auxiliary classifiers)
produce nothing and are left out.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.models.families import family_of
from core.models.surgery import stages_of


def stage_modules(model: nn.Module, arch: str) -> list[tuple[str, str]]:
    """(stage name, path of the module whose output is the stage's output), input first.
    A path that names a parameter (ViT's class token, position embedding) is skipped."""
    out = []
    for name, paths in stages_of(model, arch):
        modules = []
        for p in paths:
            try:
                modules.append((p, model.get_submodule(p)))
            except AttributeError:
                continue  # a parameter, not a module
        if modules:
            out.append((name, modules[-1][0]))
    return out


@contextlib.contextmanager
def capture(model: nn.Module, arch: str):
    """Within the block, every forward pass fills ``found[stage] = output`` (detached)."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, path in stage_modules(model, arch):
        def hook(_m, _args, out, name=name):
            if isinstance(out, (tuple, list)):  # some blocks return (tensor, extras)
                out = out[0]
            if isinstance(out, torch.Tensor):
                found[name] = out.detach()
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def as_map(x: torch.Tensor, arch: str) -> torch.Tensor | None:
    """A stage output as batch x channels x height x width, or None when it has no grid."""
    fam = family_of(arch).name
    if x.dim() == 4:
        return x.permute(0, 3, 1, 2) if fam == "swin" else x
    if x.dim() == 3:  # tokens: batch x tokens x width (ViT), class token first
        tokens = x[:, 1:] if fam == "vit" else x
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            return None
        return tokens.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
    return None


def pooled(x: torch.Tensor, arch: str) -> torch.Tensor:
    """One vector per image: a map averaged over its positions, tokens over tokens."""
    grid = as_map(x, arch)
    if grid is not None:
        return grid.float().mean(dim=(2, 3))
    return x.float().reshape(x.shape[0], -1) if x.dim() == 2 else x.float().mean(dim=tuple(range(1, x.dim() - 1)))


@torch.inference_mode()
def stage_maps(model: nn.Module, arch: str, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(stage name, channels x h x w map) of one image ``x`` (1 x 3 x H x W), input first;
    stages without a grid (a classifier stage) are left out."""
    was_training = model.training
    model.eval()
    try:
        with capture(model, arch) as found:
            model(x.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    out = []
    for name, _ in stage_modules(model, arch):
        if name in found:
            grid = as_map(found[name], arch)
            if grid is not None:
                out.append((name, grid[0].float().cpu()))
    return out


def strongest_channels(fmap: torch.Tensor, k: int = 4) -> list[int]:
    """The ``k`` channels with the largest mean activation: the ones this photo drives."""
    return fmap.mean(dim=(1, 2)).topk(min(k, len(fmap))).indices.tolist()


# A perceptually ordered dark-to-bright colour map (viridis, sampled): equal steps look
# equal, and it reads in greyscale and for red-green colour blindness.
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]], dtype=np.float64)


def channel_image(channel: torch.Tensor, size: int = 96) -> Image.Image:
    """One channel as a viridis picture, scaled from its own minimum to its maximum
    (a flat channel is uniformly dark), enlarged to ``size`` pixels without smoothing."""
    c = channel.double()
    span = float(c.max() - c.min())
    v = ((c - c.min()) / span).numpy() if span > 0 else np.zeros(tuple(c.shape))
    idx = v * (len(_VIRIDIS) - 1)
    lo = np.floor(idx).astype(int).clip(0, len(_VIRIDIS) - 2)
    t = (idx - lo)[..., None]
    rgb = _VIRIDIS[lo] * (1 - t) + _VIRIDIS[lo + 1] * t
    img = Image.fromarray(rgb.round().astype(np.uint8))
    h, w = v.shape
    scale = max(1, size // max(h, w))
    return img.resize((w * scale, h * scale), Image.Resampling.NEAREST) if scale > 1 else img.resize((size, size))


def strip(fmap: torch.Tensor, k: int = 4, size: int = 96, gap: int = 4) -> Image.Image:
    """The ``k`` strongest channels of one stage, side by side on white."""
    images = [channel_image(fmap[c], size) for c in strongest_channels(fmap, k)]
    h = max(i.height for i in images)
    out = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), h), "white")
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out
