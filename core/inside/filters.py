"""The first convolution's kernels, as colour tiles.

The first layer is the one place where a network's weights can be looked at directly:
each kernel is a small RGB image (3 input channels x k x k), and what it responds to is
what it looks like.  Trained on ImageNet they are oriented edges, bars and colour
opponents (red-green, blue-yellow), smooth across neighbouring pixels; at random init they
are noise.  That is the picture behind "freeze the low layers": these detectors are the
same whatever the objects.

``smoothness`` puts a number on it: the correlation between horizontally and vertically
neighbouring weights of a kernel, averaged over kernels and colours.  Noise gives about
0; edge and blob detectors well above it.  It needs kernels of at least 2 x 2 (a 1 x 1
first convolution, rare, has no spatial structure to show).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import nn


def first_conv(model: nn.Module) -> tuple[str, torch.Tensor]:
    """(module path, weight out x in x kh x kw) of the first convolution that reads the image.

    Modules are registered in the order the builders apply them in every torchvision
    family (stems before stages), so the first ``Conv2d`` with 3 input channels is the
    one that sees pixels (ViT's patch embedding, Swin's patchify convolution included)."""
    fallback = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels == 3:
                return name, m.weight.detach().float().cpu()
            fallback = fallback or (name, m.weight.detach().float().cpu())
    if fallback is None:
        raise ValueError(f"{type(model).__name__} has no convolution to show")
    return fallback


def smoothness(weight: torch.Tensor) -> float | None:
    """Mean correlation of neighbouring weights within each kernel and colour (see module
    docstring); None for kernels smaller than 2 x 2."""
    w = weight.double()
    if w.shape[-1] < 2 or w.shape[-2] < 2:
        return None
    pairs = [(w[..., :, :-1], w[..., :, 1:]), (w[..., :-1, :], w[..., 1:, :])]
    a = torch.cat([p[0].reshape(*w.shape[:2], -1) for p in pairs], -1)
    b = torch.cat([p[1].reshape(*w.shape[:2], -1) for p in pairs], -1)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    denom = (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    return float(((a * b).sum(-1) / denom).mean())


def tiles(weight: torch.Tensor, max_filters: int = 64, tile_px: int = 48, gap: int = 4) -> Image.Image:
    """A grid of kernels, each scaled on its own (grey = 0, its largest |weight| to black or
    full colour), nearest-neighbour enlarged to ``tile_px`` so single weights stay squares.

    Symmetric per-kernel scaling keeps the sign visible (a dark-light edge stays one) and
    lets small kernels show their pattern whatever their norm.  More than 3 input channels
    (not a first layer) are shown as their mean, in grey."""
    w = weight[:max_filters].float()
    if w.shape[1] == 3:
        pix = w
    else:
        pix = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    scale = pix.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    pix = (0.5 + 0.5 * pix / scale).clamp(0, 1)  # [-max, max] -> [0, 1], grey at zero
    n = len(pix)
    cols = min(n, 16 if n > 32 else 8)
    rows = math.ceil(n / cols)
    kh, kw = pix.shape[-2:]
    zoom = max(1, tile_px // max(kh, kw))
    th, tw = kh * zoom, kw * zoom
    canvas = np.full((rows * (th + gap) + gap, cols * (tw + gap) + gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        tile = (pix[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tile = tile.repeat(zoom, 0).repeat(zoom, 1)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        canvas[y:y + th, x:x + tw] = tile
    return Image.fromarray(canvas)


def describe(weight: torch.Tensor) -> dict:
    """Shape and smoothness of a first convolution, for captions and the CLI."""
    return {"filters": int(weight.shape[0]), "in_channels": int(weight.shape[1]),
            "kernel": [int(weight.shape[-2]), int(weight.shape[-1])], "smoothness": smoothness(weight)}
