"""Checking a weights file against the SHA-256 prefix its name carries.

torch hub publishes weights as ``<stem>-<first hex digits of the file's SHA-256>.<ext>``
(``mobilenet_v2-b0353104.pth``) but checks that prefix only while downloading.  A copy
changed afterwards (in the hub cache, on a shared disk, in an upload) then loads without
a word, and files in the old non-zip format have no CRC that could catch it.  So
``read_state_dict`` checks every file whose name carries a hash, before anything in it
is unpickled; a file whose name carries none cannot be checked, and is not.

Hashing the 14 MB MobileNetV2 file costs ~30 ms and the classroom server builds a model
per job, so a verified file is remembered for the life of the process, keyed by what
changes when the file does (its path, size, mtime and inode).
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

from core.errors import WeightsError

# torch hub's HASH_REGEX is r"-([a-f0-9]*)\." searched anywhere in the name: any length,
# even none.  That is harmless on download (the publisher chose the name) but not on
# every load of a user's file, where "-cafe.pth", "-bad.pt" or "-1.pth" are words and
# versions.  So, keeping its lowercase hex after a dash (hexdigest() is lowercase):
# - 8 to 64 digits: all 115 torchvision files carry 8 or 10; 8 is 32 bits of hash, so a
#   damaged file passes by chance once in 4 billion; 64 is the whole SHA-256;
# - right before a weights extension at the end of the name, so the promise is about
#   this very file ("x-0123abcd.pth.bak" promises nothing).
HASH_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?i:pth|pt|bin|ckpt|pth\.tar|safetensors)$")


def name_hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix a torch-hub style name promises, e.g. ``b0353104``, else None."""
    m = HASH_NAME.search(filename)
    if m is None or _reads_as_date(m.group(1)):
        return None
    return m.group(1)


def _reads_as_date(digits: str) -> bool:
    """``model-20240315.pth`` is dated, not hashed: all-decimal runs that are a real
    YYYYMMDD[HHMM[SS]] are not checked.  The two torchvision hashes without a letter
    (vgg13-19584684, vit_h_14_swag-80465313) are no dates, so they stay checked; a hash
    that happens to be a date (about 1 in 60,000) goes unchecked, not falsely refused."""
    if not digits.isdigit() or len(digits) not in (8, 12, 14) or not 1970 <= int(digits[:4]) <= 2099:
        return False
    fields = [digits[:4], *(digits[i:i + 2] for i in range(4, len(digits), 2))]  # year, month, day[, h, m[, s]]
    try:
        datetime(*map(int, fields))
    except ValueError:
        return False
    return True


class HashMismatch(WeightsError):
    """A file's bytes do not match the hash in its name; ``why`` is the reason alone, for
    callers that know more about where the file lies (the hub cache)."""

    def __init__(self, name: str, prefix: str, digest: str):
        self.name, self.prefix = name, prefix
        self.why = (f"its content does not match the SHA-256 prefix {prefix} in its name "
                    f"(its SHA-256 begins {digest[:len(prefix)]}), so it was changed or damaged since it was published")
        super().__init__(f"refused {name}: {self.why}; copy or download it again "
                         f"(a file of your own under this name: rename it without -{prefix})")


_MAX_REMEMBERED = 256
_lock = threading.Lock()
_verified: OrderedDict[tuple, None] = OrderedDict()
_hashing: dict[tuple, threading.Lock] = {}


def _key(path: Path) -> tuple:
    st = os.stat(path)
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # releases the GIL while it hashes


def check_name_hash(path: str | Path) -> None:
    """Raise ``HashMismatch`` naming the file when its name carries a hash its bytes do
    not have.  A file verified before and unchanged since is not hashed again; jobs that
    start together on one file wait for a single hash instead of each reading it."""
    path = Path(path)
    prefix = name_hash_prefix(path.name)
    if prefix is None:
        return
    try:
        key = _key(path)
    except OSError as e:
        raise WeightsError(f"{path.name} cannot be read: {e.strerror or e}") from None
    with _lock:
        if key in _verified:
            _verified.move_to_end(key)
            return
        gate = _hashing.setdefault(key, threading.Lock())
    try:
        with gate:
            with _lock:
                if key in _verified:  # another job hashed it while this one waited
                    return
            try:
                digest = sha256_of(path)
                unchanged = _key(path) == key  # not remembered when it changed while being read
            except OSError as e:
                raise WeightsError(f"{path.name} cannot be read: {e.strerror or e}") from None
            if not digest.startswith(prefix):
                raise HashMismatch(path.name, prefix, digest)
            if unchanged:
                with _lock:
                    _verified[key] = None
                    while len(_verified) > _MAX_REMEMBERED:
                        _verified.popitem(last=False)
    finally:
        with _lock:
            if _hashing.get(key) is gate:
                del _hashing[key]


def forget() -> None:
    """Drop every remembered verdict (tests; a process that knows files were replaced)."""
    with _lock:
        _verified.clear()
