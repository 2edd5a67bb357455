"""Shared makings of the seeded fuzz tests (test_fuzz_*.py): hostile bytes, and a tally
of what each class of case gave, per boundary.

Every generator takes a seed, so a failure names a case that replays exactly.  The
tally is printed at the end of each module (``pytest -s``) and, when
``TRANSFERLAB_FUZZ_SUMMARY`` names a file, appended to it as JSON lines.
"""
from __future__ import annotations

import pytest

import json
import os
import random
import re
from collections import Counter

# Files that are plainly something else, as they arrive under a wrong extension.
FOREIGN = {
    "text": b"hello",
    "html": b"<!DOCTYPE html>\n<html><head><title>Sign in - GitHub</title></head><body>Not Found</body></html>\n",
    "pdf": b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
    "svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="3" height="2"><rect width="3" height="2"/></svg>',
    "json": b'{"model": "mobilenet_v2", "state_dict": [1, 2, 3]}',
    "lfs-pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:4f1c\nsize 14212972\n",
    "utf16-text": "weights".encode("utf-16"),
    "nul-bytes": b"\0" * 512,
}
RANDOM_LENGTHS = (0, 1, 5, 8, 16, 100, 512, 4096, 65536)


def random_blobs(seed: int, lengths=RANDOM_LENGTHS):
    rng = random.Random(seed)
    for n in lengths:
        yield f"random-{n}", rng.randbytes(n)


def cut_offsets(size: int, count: int, seed: int) -> list[int]:
    """Where to cut a file: its first bytes, its last bytes, and seeded points between."""
    rng = random.Random(seed)
    edges = {0, 1, 2, 4, 8, 16, 64, size // 2, size - 1, size - 2, size - 8}
    return sorted({o for o in edges if 0 <= o < size} | {rng.randrange(1, size) for _ in range(count)})


def flipped(data: bytes, seed: int, lo: int, hi: int, n: int = 2) -> bytes:
    """``data`` with ``n`` bytes in [lo, hi) XORed with a seeded non-zero mask."""
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(lo, min(hi, len(b)))
        b[i] ^= rng.randrange(1, 256)
    return bytes(b)


def report_at_end(tally: "Tally"):
    """A module-scoped autouse fixture that prints ``tally`` once the module's cases ran:
    ``_report = report_at_end(TALLY)`` in a fuzz module."""
    @pytest.fixture(scope="module", autouse=True)
    def _report():
        yield
        tally.report()
    return _report


class Tally:
    """What each class of case gave: ``tally.add("truncated .pth", "WeightsError: ...")``."""

    def __init__(self, boundary: str):
        self.boundary, self.counts = boundary, Counter()

    def add(self, case: str, outcome: str, name: str = "") -> None:
        self.counts[(case, _shape(outcome.replace(name, "<file>") if name else outcome))] += 1

    def report(self) -> None:
        total = sum(self.counts.values())
        lines = [f"  {case:34} {n:4}  {outcome}" for (case, outcome), n in sorted(self.counts.items())]
        print(f"\n{self.boundary}: {total} fuzz cases", *lines, sep="\n")
        out = os.environ.get("TRANSFERLAB_FUZZ_SUMMARY")
        if out:
            with open(out, "a", encoding="utf-8") as f:
                rows = [{"case": c, "outcome": o, "n": n} for (c, o), n in sorted(self.counts.items())]
                f.write(json.dumps({"boundary": self.boundary, "total": total, "rows": rows}, ensure_ascii=False) + "\n")


def _shape(outcome: str) -> str:
    """An outcome without its specifics (file names, numbers, quoted names), so that
    like cases count together."""
    outcome = re.sub(r"'[^']*'", "'…'", outcome)
    outcome = re.sub(r"\d[\d,.]*", "N", outcome)
    return outcome[:110]


def test_the_generators_are_seeded():
    assert list(random_blobs(3)) == list(random_blobs(3))
    assert cut_offsets(1000, 10, 1) == cut_offsets(1000, 10, 1)
    assert flipped(b"abcdef" * 10, 5, 0, 60) == flipped(b"abcdef" * 10, 5, 0, 60) != b"abcdef" * 10
    t = Tally("x")
    t.add("a", "WeightsError: f.pth is empty (0 bytes)", "f.pth")
    t.add("a", "WeightsError: g.pth is empty (12 bytes)", "g.pth")
    assert t.counts == Counter({("a", "WeightsError: <file> is empty (N bytes)"): 2})
