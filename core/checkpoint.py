"""Reading weight files safely and loading them into a model that may not fit.

``.pth``/``.pt`` files are pickles: ``torch.load(weights_only=True)`` unpickles tensors
and containers only, so a file that needs code to load is refused and its code never
runs.  ``.safetensors`` holds no code at all.  Partial loading is the transfer-learning
everyday case: an ImageNet file into a 2-class model loads the body and skips the head.
"""
from __future__ import annotations

import pickle
import pickletools
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import WeightsError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin/.safetensors file, unwrapped and ``module.``-stripped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path.name} is not a readable safetensors file ({e})") from None
    else:
        try:
            with warnings.catch_warnings():  # protocol notices are not the user's business
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            code = next((g for g in pickle_globals(path) if not g.startswith(SAFE_GLOBAL_PREFIXES)), None)
            if code is None:
                raise WeightsError(f"{path.name} is not a readable PyTorch weights file (damaged or not a checkpoint)") from None
            raise WeightsError(f"refused {path.name}: it needs code to load ({code}), which is never run here "
                               "(torch.load with weights_only=True). Save a plain state_dict instead.") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as e:
            raise WeightsError(f"{path.name} is not a readable PyTorch weights file ({str(e).splitlines()[0][:200]})") from None
    return _unwrap(obj, path.name)


# What a plain state_dict pickle may name: torch's tensor rebuilders and containers.
SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.bytearray",
                        "numpy.")


def pickle_globals(path: Path) -> list[str]:
    """The classes and functions a pickle would import, read from its opcodes without
    running anything (the pickle inside a torch zip file, or the file itself)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(name) if name else b""
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # noqa: BLE001 - not a pickle at all: nothing to name
        return []


def _unwrap(obj, name: str) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"model": {"state_dict": ...}} nests at most a couple of times
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        raise WeightsError(f"{name} holds no state_dict (a mapping of names to tensors)")
    prefixes = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
    out = {}
    for k, v in obj.items():
        for pre in prefixes:
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[dict] = field(default_factory=list)   # {"name", "file_shape", "model_shape"}
    missing: list[str] = field(default_factory=list)          # in the model, not given by the file
    unexpected: list[str] = field(default_factory=list)       # in the file, not in the model
    backbone_loaded: int = 0
    backbone_total: int = 0

    def counts(self) -> dict[str, int]:
        return {"loaded": len(self.loaded), "skipped_shape": len(self.skipped_shape),
                "missing": len(self.missing), "unexpected": len(self.unexpected)}

    def to_dict(self) -> dict:
        return {**asdict(self), "counts": self.counts()}

    def summary(self) -> str:
        c = self.counts()
        return (f"{c['loaded']} tensors loaded, {c['skipped_shape']} skipped (shape differs), "
                f"{c['missing']} missing, {c['unexpected']} unexpected")


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], head_prefixes: list[str],
                  source: str = "", arch: str = "the model", min_backbone_fraction: float = 0.5) -> LoadReport:
    """Load every tensor whose name and shape fit; report the rest.

    Raises ``WeightsError`` when under ``min_backbone_fraction`` of the body's tensors
    load: that file is for another network, and a random model must never pass as
    a pretrained one.
    """
    own = model.state_dict()
    report = LoadReport(source=source)
    usable = {}
    for name, tensor in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif own[name].shape != tensor.shape:
            report.skipped_shape.append({"name": name, "file_shape": list(tensor.shape), "model_shape": list(own[name].shape)})
        else:
            usable[name] = tensor
            report.loaded.append(name)
    report.missing = [n for n in own if n not in usable]

    def in_head(n: str) -> bool:
        return any(n.startswith(h + ".") for h in head_prefixes)
    body = [n for n in own if not in_head(n)]
    report.backbone_total = len(body)
    report.backbone_loaded = sum(1 for n in body if n in usable)
    if report.backbone_total and report.backbone_loaded < min_backbone_fraction * report.backbone_total:
        raise WeightsError(f"this file does not fit {arch}: {report.backbone_loaded} of {report.backbone_total} tensors matched"
                           + (f" ({source})" if source else ""))
    model.load_state_dict(usable, strict=False)
    return report
