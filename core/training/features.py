"""The frozen-backbone fast path: run the frozen body once, train the head on its output.

With every parameter outside the head frozen (and frozen parts in eval mode, see
``surgery.train_mode``), the body is a fixed function: its output for an image never
changes across epochs.  So the body runs once per image (per augmented view), and
each epoch only runs the small *tail*: the head plus the parameter-free stochastic
layers just before it (MobileNet's ``Dropout`` in ``classifier``), which keep their
randomness.  The tail shares its modules with the model, so the saved model is the
full network with the trained head.

Whether this is exact is checked, not assumed: the tail applied to cached inputs must
reproduce the full model's logits on a few real images, or the trainer falls back to
the plain path.
"""
from __future__ import annotations

import torch
from torch import nn

from core.models.surgery import head_path, head_paths

STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _is_stochastic(m: nn.Module) -> bool:
    return isinstance(m, STOCHASTIC) or type(m).__name__ == "StochasticDepth"


class _Stop(Exception):
    pass


class Tail(nn.Module):
    """The last modules of the network: head, its parent's later children, the dropout before it."""

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.body = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.body:
            x = m(x)
        return torch.flatten(x, 1) if x.dim() > 2 else x


def find_tail(model: nn.Module, arch: str) -> tuple[nn.Module, Tail] | None:
    """(module whose input is cached, tail) or None when the model has no simple tail."""
    if len(head_paths(model, arch)) > 1:
        return None  # auxiliary heads train on inner features
    path = head_path(model, arch)
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    head = model.get_submodule(path)
    if not isinstance(parent, nn.Sequential):
        return (head, Tail([head])) if parent is model else None
    kids = list(parent.children())
    i = kids.index(head)
    stochastic_before = [k for k in range(i) if _is_stochastic(kids[k])]
    start = stochastic_before[0] if stochastic_before else i
    return kids[start], Tail(kids[start:])


def fast_path_blocker(model: nn.Module, arch: str) -> str | None:
    """Why the frozen fast path cannot be used, or None if it can (checked after ``train_mode``)."""
    found = find_tail(model, arch)
    if found is None:
        return "the model has no single classifier tail (auxiliary heads or a nested head)"
    _, tail = found
    tail_params = {id(p) for p in tail.parameters()}
    if any(p.requires_grad for p in model.parameters() if id(p) not in tail_params):
        return "parameters outside the head are trainable"
    tail_modules = {id(m) for m in tail.modules()}
    for name, m in model.named_modules():
        if id(m) not in tail_modules and m.training and _is_stochastic(m):
            return f"{name} ({type(m).__name__}) is random while training, outside the head"
    return None


def module_path(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


@torch.inference_mode()
def tail_inputs(model: nn.Module, entry: nn.Module, batches, device, amp_ctx=None, on_batch=None) -> torch.Tensor:
    """Inputs of ``entry`` for every batch, computed in eval mode and stopped right there.
    Runs on a BatchNorm-folded copy (``models/inference.py``) where the model can be traced."""
    from core.device import to_device
    from core.models.inference import fused_for_inference
    path = module_path(model, entry)
    net = fused_for_inference(model)
    try:
        entry = net.get_submodule(path)
    except AttributeError:  # FX inlined it: hook the original instead
        net = model
    model = net
    captured = []

    def hook(_m, args):
        captured.append(args[0].float().cpu())
        raise _Stop
    handle = entry.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    try:
        for k, (x, _) in enumerate(batches):
            x = to_device(x, device).contiguous(memory_format=torch.channels_last)
            try:
                with amp_ctx() if amp_ctx else torch.autocast(device.type, enabled=False):
                    model(x)
            except _Stop:
                pass
            if on_batch:
                on_batch(k, x.shape[0])
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured)


@torch.inference_mode()
def verify_tail(model: nn.Module, tail: Tail, x: torch.Tensor, cached: torch.Tensor, device) -> bool:
    """The tail on cached inputs must give the model's logits (eval mode, same images)."""
    was_training = model.training
    model.eval()
    try:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        full = model(x).float()
        part = tail(cached.to(device)).float()
    finally:
        model.train(was_training)
    return full.shape == part.shape and torch.allclose(full, part, rtol=1e-3, atol=1e-4)
