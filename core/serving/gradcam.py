"""Grad-CAM (Selvaraju et al., 2017) for the family's last convolutional block.

A short implementation rather than the ``grad-cam`` package, which pulls in OpenCV,
scikit-learn and matplotlib for what is twenty lines with hooks.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from core.models.families import family_of


def cam_layer_path(arch: str) -> str | None:
    return family_of(arch).cam_layer


def gradcam(model: torch.nn.Module, arch: str, x: torch.Tensor, class_index: int) -> np.ndarray | None:
    """A [0, 1] heatmap (H x W of ``x``) of where ``class_index`` is seen, or None for
    architectures without a convolutional feature map (ViT, Swin, MaxViT)."""
    path = cam_layer_path(arch)
    if path is None:
        return None
    layer = model.get_submodule(path)
    store = {}

    def fwd(_m, _i, out):
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))
    handle = layer.register_forward_hook(fwd)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # gradients flow even through a frozen body
            logits = model(x)
            model.zero_grad(set_to_none=True)
            logits[0, class_index].backward()
    finally:
        handle.remove()
        model.train(was_training)
    act, grad = store["act"][0].detach(), store["grad"][0].detach()
    weights = grad.mean(dim=(1, 2), keepdim=True)
    cam = torch.relu((weights * act).sum(0))
    cam = torch.nn.functional.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max()).cpu().numpy() if cam.max() > 0 else cam.cpu().numpy()


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """Red-to-yellow over the regions that drive the class; the rest of the photo shows as is."""
    h, w = cam.shape
    base = np.asarray(image.convert("RGB").resize((w, h)), dtype=np.float32) / 255
    color = np.stack([np.ones_like(cam), cam, np.zeros_like(cam)], axis=-1)  # red (weak) .. yellow (strong)
    weight = alpha * np.clip((cam - 0.2) / 0.8, 0, 1)[..., None]               # below 20%: untouched
    out = base * (1 - weight) + color * weight
    return Image.fromarray((out.clip(0, 1) * 255).astype(np.uint8))
