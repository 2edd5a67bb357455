"""A process-wide cache of frozen-backbone features, shared by every job and tab.

A frozen body is a fixed function, so its output for the same images, transforms and
augmentation seed is the same in every run: a class of students training the demo
should pay for one feature pass, not thirty.  Entries are keyed by everything that
determines them (``feature_key``): the bytes of the frozen tensors themselves (not a
file name: two files with the same tensors share, a re-uploaded different file does
not), the architecture and the cut point, the exact image files (path, size, mtime),
the transform spec, the augmentation seed and view, and the numeric mode (device type,
autocast dtype, torch version).

Memory holds up to ``max_bytes`` (least recently used out first); with a ``disk_dir``
entries are also written as .safetensors (no pickles: loading runs no code), so a server
restart or a second CLI run starts warm.  The disk holds up to ``disk_max_bytes``
(``TRANSFERLAB_FEATURE_DISK_MB``, 2 GiB): a read touches a file's mtime, and a write
removes the least recently used files beyond the bound.  Concurrent requests for one key compute it
once: the second waits for the first.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from core import paths

DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_DISK_MAX_BYTES = int(float(os.environ.get("TRANSFERLAB_FEATURE_DISK_MB", 2048)) * 2**20)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of named tensors' values (blake2b over names, dtypes, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def files_signature(samples) -> list:
    """(path, label, size, mtime_ns) per sample: a replaced or edited photo changes the key."""
    out = []
    for path, label in samples:
        st = os.stat(path)
        out.append([str(path), int(label), st.st_size, st.st_mtime_ns])
    return out


def feature_key(**parts) -> str:
    """A stable key from JSON-able parts (order-independent)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=20).hexdigest()


class FeatureCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, disk_dir: str | os.PathLike | None = None,
                 disk_max_bytes: int = DEFAULT_DISK_MAX_BYTES):
        self.max_bytes, self.disk_max_bytes = max_bytes, disk_max_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._mem: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.hits = self.misses = 0

    # ---- lookups -------------------------------------------------------------------
    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self.hits += 1
                return self._mem[key]
        found = self._read_disk(key)
        with self._lock:
            if found is not None:
                self.hits += 1
                self._remember(key, found)
            else:
                self.misses += 1
        return found

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        with self._lock:
            self._remember(key, tensors)
        self._write_disk(key, tensors)

    def get_or_compute(self, key: str, compute) -> tuple[dict[str, torch.Tensor] | None, bool]:
        """(tensors, hit).  ``compute()`` returns the tensors, or None when it was cut short
        (a stop request): nothing is stored then."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # a second job with the same key waits here, then hits
            found = self.get(key)
            if found is not None:
                return found, True
            value = compute()
            if value is not None:
                self.put(key, value)
            return value, False

    def contains(self, key: str) -> bool:
        with self._lock:
            if key in self._mem:
                return True
        return self.disk_dir is not None and (self.disk_dir / f"{key}.safetensors").is_file()

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()
            self._bytes = 0

    # ---- internals -------------------------------------------------------------------
    def _remember(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > self.max_bytes:
            return  # larger than the whole budget: disk only
        if key in self._mem:
            self._bytes -= sum(t.numel() * t.element_size() for t in self._mem.pop(key).values())
        self._mem[key] = tensors
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._mem.popitem(last=False)
            self._bytes -= sum(t.numel() * t.element_size() for t in old.values())

    def _read_disk(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.disk_dir is None:
            return None
        path = self.disk_dir / f"{key}.safetensors"
        if not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            found = load_file(str(path))
            os.utime(path)  # recently used: the disk bound removes the others first
            return found
        except (SafetensorError, OSError, ValueError):
            path.unlink(missing_ok=True)  # damaged (a crash mid-write elsewhere): recompute
            return None

    def _write_disk(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.disk_dir is None:
            return
        from safetensors.torch import save_file
        try:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=self.disk_dir)
            os.close(fd)
            save_file(tensors, tmp)
            os.replace(tmp, self.disk_dir / f"{key}.safetensors")  # readers never see half a file
            self.trim_disk(self.disk_max_bytes)
        except OSError:
            pass  # a full or read-only disk costs speed, not correctness

    def trim_disk(self, max_bytes: int) -> int:
        """Remove the least recently used files until the folder holds at most ``max_bytes``
        (0: all of them); returns the bytes freed."""
        found = self.disk_dir.glob("*.safetensors") if self.disk_dir and self.disk_dir.is_dir() else ()
        return paths.trim_oldest(found, max_bytes)


_DEFAULT: FeatureCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> FeatureCache:
    """The process-wide cache: memory, plus ``<data dir>/features`` on disk unless
    ``TRANSFERLAB_FEATURE_DISK=0``.  A new one if the data folder moved (tests do that)."""
    global _DEFAULT
    disk = None if os.environ.get("TRANSFERLAB_FEATURE_DISK", "1") == "0" else paths.DEFAULT_DATA_DIR / "features"
    with _DEFAULT_LOCK:
        if _DEFAULT is None or _DEFAULT.disk_dir != disk:
            _DEFAULT = FeatureCache(disk_dir=disk)
        return _DEFAULT
