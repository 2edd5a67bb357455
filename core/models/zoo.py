"""The model zoo: every torchvision classifier by name, its ImageNet weights found
locally or fetched, and ``build_model`` that returns a model ready for N classes.

Weights are data that carry their own transforms (torchvision's ``_api.py`` idea): the
transform spec of a built model is the one of the weight version actually loaded.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from core.models import download, file_hash

from core import paths
from core.models.checkpoint import LoadReport, load_matching, read_state_dict
from core.errors import UnknownArchitectureError, WeightsError
from core.models.families import family_of
from core.models.surgery import head_paths, reset_classifier
from core.data.transforms import TransformSpec

# Training draws from each run's own generators (training/run_random.py); building a model
# still seeds torch's global one, so two queue workers building at once take turns.
_INIT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def list_architectures() -> list[str]:
    """Names of torchvision's image classifiers (quantized and video models excluded)."""
    return sorted(models.list_models(module=models))


def check_arch(arch: str) -> str:
    if arch not in list_architectures():
        close = [a for a in list_architectures() if a.startswith(arch[:4])][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownArchitectureError(f"unknown architecture {arch!r}: not a torchvision classifier{hint}")
    return arch


def weight_versions(arch: str) -> list:
    """ImageNet weight versions of ``arch``, the default first."""
    enum = models.get_model_weights(check_arch(arch))
    default = enum.DEFAULT
    return [default] + [w for w in enum if w is not default]


def weights_filename(w) -> str:
    return os.path.basename(w.url)


def local_weights(arch: str):
    """(weights enum, file) of the first version present locally, else None.

    Found by name only, so the picker stays cheap: the file is checked against the hash
    in its name when it is read (``read_state_dict``), and one that fails is refused
    there, never swapped for a copy further down this list."""
    for w in weight_versions(arch):
        for d in paths.hub_checkpoint_dirs():
            f = d / weights_filename(w)
            if f.is_file():
                return w, f
    return None


def pretrained_available(arch: str) -> bool:
    """Whether ImageNet weights for ``arch`` can be loaded without a network."""
    return local_weights(arch) is not None


def resolve_imagenet(arch: str, progress=None):
    """Find or fetch ImageNet weights: a local version first, else download the default
    into the torch hub cache.  Raises ``WeightsError`` naming the expected file and URL."""
    found = local_weights(arch)
    if found:
        return found
    w = weight_versions(arch)[0]
    dest = paths.hub_checkpoint_dirs()[0] / weights_filename(w)
    try:
        download.download(w.url, dest, progress, file_hash.name_hash_prefix(dest.name))
    except Exception as e:
        raise WeightsError(f"no ImageNet weights for {arch} here: expected $TORCH_HOME/hub/checkpoints/{dest.name} "
                           f"(looked in {', '.join(str(d) for d in paths.hub_checkpoint_dirs())}); it comes from {w.url}, "
                           f"and fetching it failed: {e}. Use weights 'none' (train from scratch) or a local file.") from None
    return w, dest


def arch_info(arch: str) -> dict:
    """What the picker shows: family, size, ImageNet accuracy, weights available here."""
    w = weight_versions(arch)[0]
    found = local_weights(arch)
    return {"arch": arch, "family": family_of(arch).name, "params": w.meta.get("num_params"),
            "imagenet_acc1": w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
            "pretrained_local": found is not None, "local_version": found[0].name if found else None,
            "weights_file": weights_filename(found[0] if found else w), "url": (found[0] if found else w).url}


def _read_hub_file(file: Path) -> dict[str, torch.Tensor]:
    """``read_state_dict`` of a hub copy, whose refusal for a hash mismatch says where the
    file lies and what to do: the copy is not used, and no other is taken silently."""
    try:
        return read_state_dict(file)
    except file_hash.HashMismatch as e:
        dirs = paths.hub_checkpoint_dirs()
        where = ("the torch hub cache ($TORCH_HOME/hub/checkpoints)" if file.parent == dirs[0]
                 else "the shared folder (shared/torch_home/hub/checkpoints)")
        raise WeightsError(f"refused {e.name} in {where}: {e.why}; delete it (it is downloaded again where there "
                           "is a network) or replace it with an intact copy") from None


@dataclass
class ModelSpec:
    """Everything needed to rebuild the network of a run without its original weights."""
    arch: str
    num_classes: int
    hidden: int = 0
    dropout: float = 0.0
    build_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BuiltModel:
    model: nn.Module
    spec: ModelSpec
    transform: TransformSpec
    weights: str                       # "imagenet:IMAGENET1K_V1", "none" or "file:<name>"
    load_report: LoadReport | None = None


def instantiate(spec: ModelSpec) -> nn.Module:
    """A randomly initialised model of ``spec``, head already sized for its classes."""
    fam = family_of(spec.arch)
    kwargs = {**fam.build_kwargs, **spec.build_kwargs}
    model = models.get_model(spec.arch, weights=None, **kwargs)
    return reset_classifier(model, spec.arch, spec.num_classes, spec.hidden, spec.dropout)


def build_model(arch: str, num_classes: int, weights: str = "imagenet", hidden: int = 0, dropout: float = 0.0,
                seed: int | None = None, progress=None) -> BuiltModel:
    """Build ``arch`` for ``num_classes`` with ``weights``: "imagenet", "none" or a file path.

    The new head is random (seeded by ``seed`` when given); for "imagenet" and files the
    body is loaded with ``load_matching``, whose report says what fitted.
    """
    check_arch(arch)
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    fam = family_of(arch)
    state, source, w = None, None, None
    if weights == "imagenet":
        w, file = resolve_imagenet(arch, progress)
        state, source = _read_hub_file(file), f"imagenet:{w.name}"
    elif weights not in ("none", "", None):
        state, source = read_state_dict(weights), f"file:{Path(weights).name}"
    spec = ModelSpec(arch, num_classes, hidden, dropout, dict(fam.pretrained_kwargs) if weights == "imagenet" else {})
    with _INIT_LOCK:  # a new head's weights come from the global generator: one build seeds and draws at a time
        if seed is not None:
            torch.manual_seed(seed)
        model = instantiate(spec)
    report = None
    if state is not None:
        report = load_matching(model, state, head_paths(model, arch), source=source, arch=arch)
    transform = TransformSpec.from_weights(w if w is not None else weight_versions(arch)[0])
    return BuiltModel(model, spec, transform, source or "none", report)
