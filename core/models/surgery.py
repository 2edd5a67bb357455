"""Model surgery: find and replace the classifier head, freeze stages, summarise.

The BatchNorm rule (as in Lightning's ``BaseFinetuning``): a frozen part of the network
is a fixed function.  Any module whose parameters are all frozen runs in eval mode while
training, so BatchNorm keeps its running statistics and stochastic depth stays off.
Parameter-free modules (Dropout before a head) follow their parent, so the dropout that
regularises a trainable head stays active.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.models.families import Family, family_of


def last_linear_path(model: nn.Module) -> str:
    path = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            path = name
    if path is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer to use as its classifier head")
    return path


def head_path(model: nn.Module, arch: str) -> str:
    fam = family_of(arch)
    return fam.head if fam.head is not None else last_linear_path(model)


def head_paths(model: nn.Module, arch: str) -> list[str]:
    """The main head first, then auxiliary heads that exist in this instance."""
    paths = [head_path(model, arch)]
    for p in family_of(arch).aux_heads:
        try:
            model.get_submodule(p)
            paths.append(p)
        except AttributeError:
            pass
    return paths


def in_features(layer: nn.Module) -> int:
    """Input width of a head, whether a Linear, a 1x1 Conv or our hidden-layer Sequential."""
    if isinstance(layer, nn.Sequential):
        layer = layer[0]
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels
    raise TypeError(f"cannot read the input width of {type(layer).__name__}")


def make_head(old: nn.Module, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> nn.Module:
    """A fresh head of the same kind as ``old`` (Linear, or 1x1 Conv for SqueezeNet),
    optionally with one hidden layer + ReLU + dropout (the classic "new classifier")."""
    n_in = in_features(old)
    conv = isinstance(old if not isinstance(old, nn.Sequential) else old[0], nn.Conv2d)
    layer = (lambda i, o: nn.Conv2d(i, o, kernel_size=1)) if conv else nn.Linear
    if hidden:
        return nn.Sequential(layer(n_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), layer(hidden, num_classes))
    if dropout:
        return nn.Sequential(nn.Dropout(dropout), layer(n_in, num_classes))
    return layer(n_in, num_classes)


def reset_classifier(model: nn.Module, arch: str, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> nn.Module:
    """Replace the head (and auxiliary heads) for ``num_classes`` outputs, in place."""
    main = head_path(model, arch)
    for p in head_paths(model, arch):  # auxiliary heads get a plain linear layer
        extra = (hidden, dropout) if p == main else (0, 0.0)
        model.set_submodule(p, make_head(model.get_submodule(p), num_classes, *extra))
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes  # SqueezeNet reads it
    return model


def get_classifier(model: nn.Module, arch: str) -> nn.Module:
    return model.get_submodule(head_path(model, arch))


# ---- stages and freezing -------------------------------------------------------------

def stages_of(model: nn.Module, arch: str) -> list[tuple[str, list[str]]]:
    """Ordered (stage name, module paths) of the body, the heads excluded."""
    fam: Family = family_of(arch)
    heads = head_paths(model, arch)
    stages = []
    for name, paths in fam.stages(model):
        kept = [p for p in paths if not any(p == h or p.startswith(h + ".") for h in heads)]
        if kept:
            stages.append((name, kept))
    return stages


def _params_under(model: nn.Module, paths: list[str]):
    for name, p in model.named_parameters():
        if any(name == q or name.startswith(q + ".") for q in paths):
            yield name, p


def set_trainable(model: nn.Module, paths: list[str], trainable: bool) -> None:
    for _, p in _params_under(model, paths):
        p.requires_grad_(trainable)


def freeze(model: nn.Module, arch: str, strategy) -> None:
    """Apply a freeze strategy:

    * ``"backbone"``: only the head(s) train (a fixed feature extractor);
    * ``"none"``: everything trains (fine-tuning, or training from scratch);
    * ``N`` (int, or a digit string): the first N stages are frozen, the rest trains;
    * a list of stage names or module paths: those are frozen, the rest trains.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    stages = stages_of(model, arch)
    if isinstance(strategy, str) and strategy.strip().isdigit():
        strategy = int(strategy)
    if strategy == "none":
        return
    if strategy == "backbone":
        heads = head_paths(model, arch)
        for name, p in model.named_parameters():
            p.requires_grad_(any(name.startswith(h + ".") for h in heads))
        return
    if isinstance(strategy, int):
        if not 0 <= strategy <= len(stages):
            raise ValueError(f"{arch} has {len(stages)} stages; cannot freeze the first {strategy}")
        for _, paths in stages[:strategy]:
            set_trainable(model, paths, False)
        set_trainable(model, head_paths(model, arch), True)  # a head inside a stage (aux) still trains
        return
    if isinstance(strategy, (list, tuple)):
        by_name = dict(stages)
        for item in strategy:
            paths = by_name.get(item, [item])
            if not any(True for _ in _params_under(model, paths)):
                raise ValueError(f"{item!r} is neither a stage of {arch} ({', '.join(by_name)}) nor a module with parameters")
            set_trainable(model, paths, False)
        set_trainable(model, head_paths(model, arch), True)
        return
    raise ValueError(f"unknown freeze strategy {strategy!r}: use backbone, none, a number of stages, or stage names")


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()`` with the BatchNorm rule applied (see module docstring)."""
    model.train()

    def visit(m: nn.Module) -> None:
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()
            return
        for child in m.children():
            visit(child)
    visit(model)
    return model


def keep_bn_statistics(model: nn.Module) -> nn.Module:
    """Every BatchNorm normalises with its running statistics and leaves them as they are,
    while its scale and shift (and everything else) may still train.  Used after a
    head-only phase: the head learnt on features normalised with the pretrained
    statistics, and switching BatchNorm to batch statistics at the unfreeze changes every
    feature at once (on Fashion-MNIST photos, far from ImageNet, the unfrozen epochs then
    peaked at 0.63 validation accuracy instead of 0.80).  It also makes micro-batches exact."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


# ---- summary -------------------------------------------------------------------------

@dataclass
class StageSummary:
    name: str
    params: int
    trainable: int


def summarize(model: nn.Module, arch: str) -> dict:
    """Per stage its parameter and trainable counts, the heads, and the totals."""
    heads = head_paths(model, arch)
    rows, seen = [], {n for n, _ in _params_under(model, heads)}
    for name, paths in stages_of(model, arch):
        ps = [(n, p) for n, p in _params_under(model, paths) if n not in seen]
        seen.update(n for n, _ in ps)
        rows.append(StageSummary(name, sum(p.numel() for _, p in ps), sum(p.numel() for _, p in ps if p.requires_grad)))
    for h in heads:
        ps = list(_params_under(model, [h]))
        rows.append(StageSummary(f"head ({h})", sum(p.numel() for _, p in ps), sum(p.numel() for _, p in ps if p.requires_grad)))
    rest = [p for n, p in model.named_parameters() if n not in seen]
    if rest:
        rows.append(StageSummary("other", sum(p.numel() for p in rest), sum(p.numel() for p in rest if p.requires_grad)))
    head = head_path(model, arch)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"arch": arch, "head": head, "in_features": in_features(model.get_submodule(head)),
            "stages": [r.__dict__ for r in rows], "total_params": total, "trainable_params": trainable}


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
