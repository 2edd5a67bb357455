"""Many photos in one go: the photos of a .zip (read in memory) or of a folder,
classified in batches with progress; the result as rows and as CSV.

A zip handed in for prediction is as untrusted as a dataset upload, but nothing of it
is written to disk: entries are read one by one with the same limits as extraction
(``archive.py``: names decoded the same way, hidden and system entries skipped) plus a
cap on the photos and bytes taken, so a zip bomb stops at the cap, not at the memory.
"""
from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from core.data.archive import decode_names
from core.data.images import IMAGE_SUFFIXES, ImageReadError, is_ignored, load_rgb
from core.errors import ArchiveError

MAX_PHOTOS = 2000
MAX_BYTES = 512 * 2**20
BATCH = 16


def photos_in_zip(data: bytes, shown: str, max_photos: int = MAX_PHOTOS, max_bytes: int = MAX_BYTES):
    """(name inside the zip, bytes) of every image entry, in the zip's order; raises
    ``ArchiveError`` naming ``shown`` for an unreadable zip or one over the caps."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as e:  # noqa: BLE001 - BadZipFile, struct.error, bad name flags...
        raise ArchiveError(f"{shown} is not a readable zip archive ({' '.join(str(e).split())[:120]})") from None
    out, total = [], 0
    with zf:
        for info, name in zip(infos, decode_names(infos)):
            path = PurePosixPath(name.replace("\\", "/"))
            if info.is_dir() or any(is_ignored(PurePosixPath(p)) for p in path.parts) \
                    or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if len(out) >= max_photos:
                raise ArchiveError(f"{shown} holds more than {max_photos} photos: classify it in parts")
            total += info.file_size
            if total > max_bytes:
                raise ArchiveError(f"refused {shown}: its photos unpack to more than {max_bytes // 2**20} MB")
            try:
                with zf.open(info) as f:
                    blob = f.read(max_bytes - total + info.file_size + 1)  # never more than the cap, whatever it claims
            except Exception as e:  # noqa: BLE001 - bad CRC, encrypted, unsupported compression
                out.append((str(path), e))
                continue
            if len(blob) > info.file_size:  # it unpacks to more than its header says: a crafted entry
                raise ArchiveError(f"refused {shown}: entry {str(path)!r} unpacks to more than it declares")
            out.append((str(path), blob))
    return out


def expand(paths) -> Iterator[tuple[str, object]]:
    """(name, bytes or the error reading it) for the command line's arguments: a photo as
    it is, a folder's photos (recursively, sorted, hidden files skipped), a zip's photos."""
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(is_ignored(Path(q)) for q in p.relative_to(path).parts)):
                yield from _read(f)
        elif path.suffix.lower() == ".zip" and path.is_file():
            try:
                yield from ((f"{arg}/{n}", b) for n, b in photos_in_zip(path.read_bytes(), path.name))
            except (ArchiveError, OSError) as e:
                yield str(arg), e
        else:
            yield from _read(path)


def _read(path: Path):
    try:
        yield str(path), path.read_bytes()
    except OSError as e:
        yield str(path), OSError(f"cannot open: {e.strerror or e}")


def classify(predictor, items, topk: int = 3, progress=None, total: int | None = None) -> Iterator[dict]:
    """One row per (name, bytes or error) item, in order, ``BATCH`` photos at a time (a
    folder of thousands never sits in memory whole): its top-k, or why it could not be
    read.  ``progress(done, total)`` after every batch when ``total`` is known."""
    n, done, chunk = min(topk, len(predictor.classes)), 0, []

    def flush():
        ready = [(row, img) for row, img in chunk if img is not None]
        probs = predictor.probabilities([img for _, img in ready]) if ready else []
        for (row, _), p in zip(ready, probs):
            values, idx = p.topk(n)
            top = [(predictor.classes[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]
            row.update({"prediction": top[0][0], "confidence": top[0][1], "topk": top,
                        "top": " · ".join(f"{c} {v:.0%}" for c, v in top)})
        out = [row for row, _ in chunk]
        chunk.clear()
        return out
    for name, blob in items:
        row, img = {"file": name}, None
        if isinstance(blob, BaseException):
            row["error"] = str(blob) if isinstance(blob, (OSError, ArchiveError)) else \
                f"cannot be read from the zip ({' '.join(str(blob).split())[:100]})"
        else:
            try:
                f = io.BytesIO(blob)
                f.name = name
                img = load_rgb(f)
            except ImageReadError as e:
                row["error"] = str(e)  # the reason alone (errors.ImageReadError)
        chunk.append((row, img))
        if len(chunk) == BATCH:
            done += BATCH
            yield from flush()
            if progress and total:
                progress(min(done, total), total)
    done += len(chunk)
    yield from flush()
    if progress and total:
        progress(done, total)


def to_csv(rows: list[dict]) -> str:
    """file, prediction, confidence, top-k, error: one line per photo (spreadsheet-ready)."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=["file", "prediction", "confidence", "top", "error"], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "confidence": f"{r['confidence']:.4f}" if "confidence" in r else ""})
    return out.getvalue()
