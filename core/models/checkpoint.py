"""Reading weight files safely and loading them into a model that may not fit.

``.pth``/``.pt`` files are pickles: ``torch.load(weights_only=True)`` unpickles tensors
and containers only, so a file that needs code to load is refused and its code never
runs.  ``.safetensors`` holds no code at all.  Partial loading is the transfer-learning
everyday case: an ImageNet file into a 2-class model loads the body and skips the head.

A weights file is untrusted input, so ``read_state_dict`` is its one guarded entry:
before any tensor is trusted, a zip-format ``.pth`` must pass the CRC of every record
(``torch.load`` never checks them, so flipped bytes loaded silently) and a safetensors
header must agree with the file's size; afterwards no floating tensor may hold NaN or
inf (a flipped exponent byte, in the old non-zip format that has no CRC at all).
Before all that, a file named like torch hub's ``name-<sha256 prefix>.pth`` must match
the hash in its name (``file_hash``): the only check that covers every byte.
Whatever torch or safetensors raise on a hostile file becomes a ``WeightsError``
naming the file.
"""
from __future__ import annotations

import codecs
import json
import math
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import WeightsError
from core.models.file_hash import check_name_hash

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin/.safetensors file, unwrapped and ``module.``-stripped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    head = _head(path)
    check_name_hash(path)
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, path):
        obj = _load_safetensors(path)
    else:
        obj = _load_torch(path, head)
    state = _unwrap(obj, path.name)
    check_finite(state, path.name)
    return state


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file as saved (no unwrapping), checked like any
    other weights file: a run's own ``weights.safetensors`` is read through here."""
    path = Path(path)
    _head(path)  # a missing file: "cannot be read: No such file or directory"
    state = _load_safetensors(path)
    check_finite(state, path.name)
    return state


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise WeightsError(f"{path.name} cannot be read: {e.strerror or e}") from None
    if not head:
        raise WeightsError(f"{path.name} is empty (0 bytes): not a weights file")
    return head


def _reason(e: BaseException) -> str:
    """A library's exception as a short clause for the user."""
    if isinstance(e, EOFError):
        return "it ends too early: cut short?"
    if isinstance(e, MemoryError):
        return "its header asks for more memory than there is"
    msg = " ".join(str(e).split())[:200]
    if msg and isinstance(e, (RuntimeError, ValueError, OSError, zipfile.BadZipFile)):
        return msg
    # KeyError('101'), IndexError, struct.error: the parser tripped over garbage.
    return f"damaged or not a checkpoint: {type(e).__name__}{': ' + msg if msg else ''}"


# --- safetensors: 8-byte little-endian header length, a JSON header, then the data ---

_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1, "C64": 8, "U64": 8, "U32": 4, "U16": 2}
_ST_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def _looks_like_safetensors(head: bytes, path: Path) -> bool:  # a renamed one is read as what it is
    return len(head) > 9 and head[8:10] in (b'{"', b"{ ") and int.from_bytes(head[:8], "little") < path.stat().st_size


def check_safetensors_header(path: Path) -> None:
    """Check a safetensors header against the file before the library maps it: the
    header length within the file, a JSON object, each tensor's dtype known, its shape
    times item size equal to its offsets' span, offsets inside the data area, and no
    two tensors overlapping."""
    def bad(why: str):
        raise WeightsError(f"{path.name} is not a readable safetensors file: {why}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            bad(f"it has {len(first)} bytes, fewer than the 8 of the header length")
        n = int.from_bytes(first, "little")
        if n > _ST_MAX_HEADER:
            bad(f"its header claims {n:,} bytes, over the format's limit of {_ST_MAX_HEADER:,}")
        if 8 + n > size:
            bad(f"its header claims {n:,} bytes but only {size - 8:,} follow (cut short?)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        bad("its header is not valid JSON")
    if not isinstance(header, dict):
        bad("its header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        bad("its __metadata__ is not a mapping of strings")
    data_len, spans = size - 8 - n, []
    for key, entry in header.items():
        if not isinstance(entry, dict):
            bad(f"tensor {key!r} has no dtype, shape and offsets")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ST_ITEMSIZE:
            bad(f"tensor {key!r} has an unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            bad(f"tensor {key!r} has a malformed shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            bad(f"tensor {key!r} has malformed data offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            bad(f"tensor {key!r} lies outside the data (bytes {begin}..{end} of {data_len}; cut short?)")
        if math.prod(shape) * _ST_ITEMSIZE[dtype] != end - begin:
            bad(f"tensor {key!r} of shape {shape} and dtype {dtype} needs {math.prod(shape) * _ST_ITEMSIZE[dtype]:,} "
                f"bytes, but its offsets span {end - begin:,}")
        spans.append((begin, end, key))
    spans.sort()
    for (_, end1, k1), (begin2, _, k2) in zip(spans, spans[1:]):
        if begin2 < end1:
            bad(f"tensors {k1!r} and {k2!r} overlap")


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file
    check_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - the guarded entry: any library failure is a bad file
        raise WeightsError(f"{path.name} is not a readable safetensors file ({_reason(e)})") from None


# --- torch files: a zip of records (torch >= 1.6) or a bare pickle stream (older) ---

_NOT_WEIGHTS = ((b"%PDF", "a PDF document"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"),
                (b"GIF8", "a GIF image"), (b"\x1f\x8b", "a gzip file (decompress it first)"),
                (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"))


def _sniff(head: bytes) -> str | None:
    """What a file plainly is when it is not a checkpoint, from its first bytes: a saved
    web page or a Git LFS pointer under a .pth name is a common mistake worth naming."""
    for magic, what in _NOT_WEIGHTS:
        if head.startswith(magic):
            return what
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a download that saved a web page instead of the file?)"
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights themselves (run `git lfs pull`)"
    if text.startswith((b"<?xml", b"<svg")):
        return "an XML/SVG document"
    try:  # incremental: the 64 bytes may end inside a multi-byte character
        chars = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    # Printable text, unless it may be an old-protocol pickle (ASCII, starting with an
    # opcode) or the first bytes of a zip ("PK").
    if not chars.replace("\n", "").replace("\r", "").replace("\t", "").isprintable() or head[:1] in b"(}]cIP":
        return None
    return "a text file"


def _load_torch(path: Path, head: bytes):
    what = _sniff(head)
    if what:
        raise WeightsError(f"{path.name} is not a readable PyTorch weights file: it is {what}")
    if zipfile.is_zipfile(path):
        _check_records(path)
    elif head.startswith(b"PK\x03\x04"):  # torch's own reader says only "Invalid argument"
        raise WeightsError(f"{path.name} is not a readable PyTorch weights file (a zip-format checkpoint "
                           "missing its end, where the index of its records is: cut short?)")
    try:
        with warnings.catch_warnings():  # protocol notices are not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        code = next((g for g in pickle_globals(path) if not g.startswith(SAFE_GLOBAL_PREFIXES)), None)
        if code is None:
            raise WeightsError(f"{path.name} is not a readable PyTorch weights file (damaged or not a checkpoint)") from None
        raise WeightsError(f"refused {path.name}: it needs code to load ({code}), which is never run here "
                           "(torch.load with weights_only=True). Save a plain state_dict instead.") from None
    except Exception as e:  # noqa: BLE001 - the guarded entry: KeyError, IndexError, RuntimeError, MemoryError...
        raise WeightsError(f"{path.name} is not a readable PyTorch weights file ({_reason(e)})") from None


def _check_records(path: Path) -> None:
    """Every record of a zip-format checkpoint against its CRC-32 (torch.load reads
    tensors without checking them)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            pickled = any(n.endswith("data.pkl") for n in z.namelist())
    except Exception as e:  # noqa: BLE001 - encrypted, unsupported compression, cut short...
        raise WeightsError(f"{path.name} is not a readable PyTorch weights file (damaged zip: {_reason(e)})") from None
    if bad is not None:
        raise WeightsError(f"{path.name} is damaged: its record {bad!r} fails its CRC-32 check "
                           "(bytes changed after it was saved; download or copy it again)")
    if not pickled:
        raise WeightsError(f"{path.name} is not a readable PyTorch weights file: it is a zip archive with no data.pkl")


def check_finite(state: dict[str, torch.Tensor], name: str) -> None:
    """Refuse a floating tensor holding NaN or inf: no trained network has them, and a
    model built from one predicts garbage without a word."""
    for key, t in state.items():
        if not (t.is_floating_point() or t.is_complex()):
            continue
        a = t.detach().cpu().resolve_conj().resolve_neg()
        a = a if a.layout == torch.strided else a.to_dense()
        if a.dtype not in (torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128):
            a = a.float()  # bfloat16 and float8 have no numpy dtype
        if not np.isfinite(a.numpy()).all():  # numpy: 50x faster than torch's isfinite on this CPU
            raise WeightsError(f"refused {name}: tensor {key!r} holds NaN or infinite values "
                               "(a damaged file, or saved from a training run that diverged)")


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
