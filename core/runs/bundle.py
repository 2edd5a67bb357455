"""A run as one portable .zip: packed here, imported on another installation.

The bundle holds the run folder's files (config with the model and transform sections,
classes, history, split, summary, reports, weights) and ``transferlab-bundle.json``,
which lists each file's SHA-256.  Exports and anything else in the folder stay behind.

Importing is a file boundary like a dataset upload, and a bundle is as untrusted: it is
extracted through ``data/archive.extract_zip`` (no ``..``, no links, a size cap), must
hold exactly the files its manifest lists with the digests it states, is read through
``load_run`` (JSON shapes), ``checked_config`` (a model that can be built) and
``load_model`` (safetensors header, finite weights, every tensor fitting).  Only then
is it moved into the runs folder, in one rename, under a name no other run has.

The imported run's validation images are on the machine it came from: its split keeps
the file list but not the folder, so nothing here ever opens a path a bundle names.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from core.data.archive import extract_zip
from core.errors import ArchiveError, RunError, TransferLabError
from core.runs.store import PARTIAL, WEIGHTS, load_run, read_json, unique_name, write_json

MANIFEST = "transferlab-bundle.json"
FORMAT = "transferlab-run-bundle"
RUN_FILES = ("config.json", "classes.json", "history.json", "split.json", "summary.json", "load_report.json",
             "skipped.json", WEIGHTS)
MAX_BUNDLE_BYTES = 2 * 1024**3   # unpacked; the largest torchvision classifier's weights are ~2.5 GB in fp32
MAX_JSON_BYTES = 64 * 1024**2    # a run's JSON files are kilobytes: anything this large is not a run


class BundleError(TransferLabError):
    """A file handed in as a run bundle cannot be imported."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def portable(file: str, obj):
    """A run file as it may leave this server: no server path and no owner.  The dataset
    and an uploaded weights file are named by their last component; the split keeps its
    dataset-relative file list without its folder; skipped files keep their names."""
    def name_of(path) -> str | None:
        return Path(str(path)).name if path else None
    if file == "config.json" and isinstance(obj, dict):
        out = {k: v for k, v in obj.items() if k != "owner"}
        out["data"] = name_of(obj.get("data"))
        if out.get("weights") not in (None, "imagenet", "none"):
            out["weights"] = name_of(obj.get("weights"))
        return out
    if file == "split.json" and isinstance(obj, dict):
        return {**{k: v for k, v in obj.items() if k not in ("root", "imported_root")}, "root": None}
    if file == "skipped.json" and isinstance(obj, list):
        return [{**s, "path": name_of(s.get("path"))} if isinstance(s, dict) else s for s in obj]
    return obj


def write_bundle(run_dir, out=None) -> Path:
    """Pack a finished run into ``out`` (default: ``<run>/exports/<run>.transferlab.zip``).
    Its JSON files go through ``portable``: a bundle names no server path and no owner."""
    run = load_run(run_dir)  # refuses an unfinished or damaged run before anything is written
    run_dir = Path(run_dir)
    files = [f for f in RUN_FILES if (run_dir / f).is_file()]
    target = Path(out) if out else run_dir / "exports" / f"{run['name']}.transferlab.zip"
    if target.is_dir():
        target = target / f"{run['name']}.transferlab.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = {f: (json.dumps(portable(f, read_json(run_dir / f)), indent=1, ensure_ascii=False).encode("utf-8")
                if f.endswith(".json") else None) for f in files}
    digests = {f: hashlib.sha256(data[f]).hexdigest() if data[f] is not None else _sha256(run_dir / f) for f in files}
    manifest = {"format": FORMAT, "version": 1, "run": run["name"], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "torch": torch.__version__.split("+")[0], "files": digests}
    tmp = target.with_name(f".{target.name}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:  # safetensors barely compress, but Deflate is what every unzip reads
            if data[f] is None:
                zf.write(run_dir / f, f"{run['name']}/{f}")
            else:
                zf.writestr(f"{run['name']}/{f}", data[f])
        zf.writestr(f"{run['name']}/{MANIFEST}", json.dumps(manifest, indent=1, ensure_ascii=False))
    tmp.replace(target)
    return target


def bundle_for(run_dir) -> Path:
    """The run's default bundle, packed again only when a run file is newer than it (the
    page asks on every rerun while its format is chosen)."""
    run_dir = Path(run_dir)
    target = run_dir / "exports" / f"{run_dir.name}.transferlab.zip"
    files = [run_dir / f for f in RUN_FILES if (run_dir / f).is_file()]
    if target.is_file() and all(f.stat().st_mtime <= target.stat().st_mtime for f in files):
        return target
    return write_bundle(run_dir)


def import_bundle(zip_path, runs_dir, display_name: str | None = None, owner: str | None = None) -> Path:
    """Check and add a bundle to ``runs_dir`` as a run of ``owner`` (None: the operator's);
    returns the new run folder.  Anything wrong is a BundleError (or ArchiveError) naming
    the user's file; nothing is left behind."""
    shown = display_name or Path(zip_path).name
    runs_dir = Path(runs_dir)
    staging = runs_dir / PARTIAL
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=staging))
    try:
        try:
            root = extract_zip(zip_path, work / "x", max_bytes=MAX_BUNDLE_BYTES, display_name=shown)
        except ArchiveError as e:
            raise BundleError(f"{e}") from None
        _check_contents(root, shown)
        try:
            from core.serving.predict import checked_config, load_model
            run = load_run(root)
            checked_config(run)
            load_model(run, torch.device("cpu"))  # builds the network and loads every tensor, strictly
        except RunError as e:
            raise BundleError(f"{shown} is not a usable run bundle: {_without_run_name(e)}") from None
        name = unique_name(runs_dir, run["name"])
        _localise(root, run, shown, owner)
        final = runs_dir / name
        root.replace(final)  # one rename: the run appears whole or not at all
        write_json(final / "config.json", {**read_json(final / "config.json"), "name": name})
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_contents(root: Path, shown: str) -> None:
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        raise BundleError(f"{shown} is not a transferlab run bundle (it has no {MANIFEST}); a dataset .zip "
                          "goes on the Data page")
    if manifest_file.stat().st_size > MAX_JSON_BYTES:
        raise BundleError(f"{shown}: {MANIFEST} is too large to be a bundle manifest")
    try:
        manifest = read_json(manifest_file)
    except (OSError, ValueError) as e:
        raise BundleError(f"{shown}: {MANIFEST} is not readable JSON ({' '.join(str(e).split())[:120]})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise BundleError(f"{shown}: {MANIFEST} does not describe a transferlab run bundle")
    if manifest.get("version") != 1:
        raise BundleError(f"{shown} is a bundle of version {manifest.get('version')!r}; this installation reads "
                          "version 1: update transferlab")
    present = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    unknown = [p for p in present if p not in RUN_FILES]
    if unknown:
        raise BundleError(f"{shown} holds files a run bundle does not: {', '.join(unknown[:5])}")
    listed = set(files)
    if set(present) != listed or not {"config.json", "classes.json", "summary.json", WEIGHTS} <= listed:
        missing = sorted(listed - set(present)) or sorted({"config.json", "classes.json", "summary.json", WEIGHTS} - listed)
        raise BundleError(f"{shown} is incomplete: it lacks {', '.join(missing) or 'its files and manifest differ'}")
    for f in present:
        if f.endswith(".json") and (root / f).stat().st_size > MAX_JSON_BYTES:
            raise BundleError(f"{shown}: {f} is too large to be part of a run")
        if _sha256(root / f) != files[f]:
            raise BundleError(f"{shown} is damaged: {f} does not match the digest in its manifest")
    (root / MANIFEST).unlink()


def _localise(root: Path, run: dict, shown: str, owner: str | None) -> None:
    """The split without its folder (the photos are on the sending machine), the importer
    as the owner, and a note of where the run came from."""
    split = run.get("split") or {}
    write_json(root / "split.json", portable("split.json", split))
    config = {k: v for k, v in run["config"].items() if k != "owner"}
    write_json(root / "config.json", {**config, "created": time.time(), "owner": owner,
                                      "imported": {"from": shown, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                   "name": run["name"], "created": config.get("created")}})


def _without_run_name(e: BaseException) -> str:
    text = str(e)
    return text.split(": ", 1)[1] if text.startswith("run ") and ": " in text else text

