"""Eval-mode copies of a model that are faster and mean the same.

In eval mode a BatchNorm after a convolution is a fixed affine map, so it can be folded
into the convolution's weights (``torch.fx.experimental.optimization.fuse``).  On the
2-core CPU this project runs on, MobileNetV2 inference went from 85 to 162 img/s at
batch 4; the logits agree to float rounding.  Models FX cannot trace are used as they are.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


def fused_for_inference(model: nn.Module) -> nn.Module:
    """A conv+BN-folded eval copy of ``model`` (channels_last), or the model itself in
    eval mode if it cannot be traced.  The original is left untouched."""
    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = fuse(model, inplace=False)
    except Exception:  # noqa: BLE001 - data-dependent control flow: FX cannot trace every model
        model.train(was_training)
        return _EvalView(model)
    model.train(was_training)
    device = next(model.parameters()).device
    return fused.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)


class _EvalView(nn.Module):
    """Runs ``model`` in eval mode, restoring its mode afterwards."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = [model]  # a list: not registered as a submodule, so no copies or .to()

    def get_submodule(self, target: str) -> nn.Module:
        return self.inner[0].get_submodule(target)

    def forward(self, x):
        m = self.inner[0]
        was = m.training
        m.eval()
        try:
            return m(x)
        finally:
            m.train(was)
