"""Runs on disk: one folder per run, written so a crash never leaves one that looks done.

While training, a run lives in ``<runs>/.partial/<name>/``; its history is rewritten
(atomically) after every epoch.  At the end the best weights and ``summary.json`` are
written and the folder is renamed to ``<runs>/<name>/`` in one step.  A folder is a
finished run exactly when it sits at the top level and holds ``summary.json``.

Files: config.json, classes.json, history.json, split.json, load_report.json,
skipped.json, weights.safetensors (best epoch), summary.json; ``published.json`` when
the operator showed the run to the class.  ``config.json`` names the run's owner
(``core/access.py``); a partial folder holds ``.writer.json``, the process writing it,
so a server that starts again can tell a dead writer's leftovers from a live CLI run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.access import OPERATOR, Viewer, owner_of
from core.models.checkpoint import read_safetensors
from core.errors import RunError, WeightsError

WEIGHTS = "weights.safetensors"
PARTIAL = ".partial"
PUBLISHED = "published.json"
WRITER = ".writer.json"


def write_json(path: Path, obj) -> None:
    """Write-then-rename: readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_weights(state: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".weights.", dir=Path(path).parent)
    os.close(fd)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp)  # channels_last tensors are not contiguous
    os.replace(tmp, path)


def safe_name(name: str) -> str:
    name = re.sub(r"[^\w.\-]+", "-", name.strip()).strip("-.")
    return name[:80] or "run"


def unique_name(runs_dir: Path, name: str) -> str:
    base, k = safe_name(name), 1
    candidate = base
    while (runs_dir / candidate).exists() or (runs_dir / PARTIAL / candidate).exists():
        k += 1
        candidate = f"{base}-{k}"
    return candidate


class RunWriter:
    """A trainer listener that persists the run as it goes and finalises it at the end."""

    def __init__(self, runs_dir, name: str, config: dict, classes: list[str], split: dict, load_report, skipped):
        self.runs_dir = Path(runs_dir)
        (self.runs_dir / PARTIAL).mkdir(parents=True, exist_ok=True)
        self.name = unique_name(self.runs_dir, name)
        self.partial = self.runs_dir / PARTIAL / self.name
        self.partial.mkdir()
        write_json(self.partial / WRITER, process_stamp())
        self.final = self.runs_dir / self.name
        self.history: list[dict] = []
        self.extra: dict = {}
        write_json(self.partial / "config.json", {**config, "name": self.name, "created": time.time()})
        write_json(self.partial / "classes.json", classes)
        write_json(self.partial / "split.json", split)
        write_json(self.partial / "load_report.json", load_report)
        write_json(self.partial / "skipped.json", skipped)

    def on_run_start(self, info: dict) -> None:
        self.extra.update(info)

    def on_epoch_end(self, record: dict) -> None:
        self.history.append(record)
        write_json(self.partial / "history.json", self.history)

    def on_run_end(self, result) -> None:
        if result.best_state is None:  # stopped before one epoch finished: nothing to keep
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        write_json(self.partial / "history.json", self.history)
        save_weights(result.best_state, self.partial / WEIGHTS)
        extra = {("epochs_planned" if k == "epochs" else k): v for k, v in self.extra.items()}
        # The last epoch beside the best: the weights kept are the best epoch's, and a schedule
        # whose later epochs lost accuracy should show it (Compare says so for fine_tune).
        summary = {**extra, "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
                   "last_val_acc": result.history[-1]["val_acc"],
                   "epochs": len(result.history), "stopped": result.stopped, "train_seconds": result.seconds,
                   "prep_seconds": result.prep_seconds, "path": result.path, "path_note": result.path_note,
                   "images_per_s": _mean([h["images_per_s"] for h in result.history]),
                   "phases": result.phases, "micro_batch": result.micro_batch}
        write_json(self.partial / "summary.json", summary)
        (self.partial / WRITER).unlink(missing_ok=True)
        os.replace(self.partial, self.final)

    def abandon(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    def finish(self, **fields) -> None:
        """Add fields to a finished run's summary (the CLI's whole-run wall time)."""
        if (self.final / "summary.json").exists():
            write_json(self.final / "summary.json", {**read_json(self.final / "summary.json"), **fields})


def _mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def is_run(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / "summary.json").is_file()


def list_runs(runs_dir) -> list[dict]:
    """Finished runs, newest first: {"dir", "name", "config", "summary"}."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for p in runs_dir.iterdir():
        if is_run(p):
            try:
                config, summary = read_json(p / "config.json"), read_json(p / "summary.json")
            except (OSError, ValueError):  # bad JSON or bad UTF-8 (UnicodeDecodeError is a ValueError)
                continue  # damaged by hand: leave it out of the list rather than fail the page
            if isinstance(config, dict) and isinstance(summary, dict):
                out.append({"dir": str(p), "name": p.name, "config": config, "summary": summary,
                            "owner": owner_of(config), "published": (p / PUBLISHED).is_file()})

    def created(r) -> float:
        c = r["config"].get("created", 0)
        return float(c) if isinstance(c, (int, float)) else 0.0
    return sorted(out, key=created, reverse=True)


# What each file of a finished run must hold; the first three must be there.
RUN_FILES = {"config": dict, "summary": dict, "classes": list, "history": list, "split": dict,
             "load_report": (dict, type(None)), "skipped": list}
REQUIRED = ("config", "summary", "classes")
_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


def load_run(run_dir) -> dict:
    """A finished run's files, checked: a run folder is untrusted input (copied between
    machines, edited by hand, cut short by a full disk), so anything unreadable or of
    the wrong shape is a ``RunError`` naming the run, never a KeyError later on."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run not found: {run_dir}")
    if not is_run(run_dir):
        raise RunError(f"run {run_dir.name!r} is not a finished run (no summary.json)")
    run = {}
    for key, kind in RUN_FILES.items():
        f = run_dir / f"{key}.json"
        if not f.exists():
            if key in REQUIRED:
                raise RunError(f"run {run_dir.name!r} is incomplete: {f.name} is missing")
            continue
        try:
            run[key] = read_json(f)
        except Exception as e:  # noqa: BLE001 - OSError, bad UTF-8, bad JSON, nesting too deep, MemoryError
            why = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:160]
            raise RunError(f"run {run_dir.name!r} is damaged: {f.name} is not readable JSON "
                           f"({why or type(e).__name__})") from None
        if not isinstance(run[key], kind):
            expected = _JSON_KINDS[kind if isinstance(kind, type) else kind[0]]
            raise RunError(f"run {run_dir.name!r} is damaged: {f.name} holds "
                           f"{_JSON_KINDS.get(type(run[key]), 'something else')}, not {expected}")
    classes = run["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise RunError(f"run {run_dir.name!r} is damaged: classes.json must list two or more distinct class names")
    run["dir"] = str(run_dir)
    run["name"] = run_dir.name
    return run


def load_weights(run_dir) -> dict[str, torch.Tensor]:
    """The run's best weights, read like any untrusted weights file (header checked,
    NaN/inf refused); errors name the run."""
    run_dir = Path(run_dir)
    f = run_dir / WEIGHTS
    if not f.is_file():
        raise RunError(f"run {run_dir.name!r} is incomplete: {WEIGHTS} is missing")
    try:
        return read_safetensors(f)
    except WeightsError as e:
        raise RunError(f"run {run_dir.name!r}: {e}") from None


def visible_runs(runs_dir, viewer: Viewer) -> list[dict]:
    """The finished runs ``viewer`` may see: their own and those published to the class
    (every run, for the operator), newest first."""
    return [r for r in list_runs(runs_dir) if viewer.can_see(r["owner"], r["published"])]


def run_owner(run_dir) -> str:
    """The owner named in a run folder's config (the operator's when none is)."""
    try:
        config = read_json(Path(run_dir) / "config.json")
    except (OSError, ValueError):
        return OPERATOR
    return owner_of(config if isinstance(config, dict) else None)


def set_published(run_dir, published: bool, viewer: Viewer) -> None:
    """Show a finished run to the whole class, or stop showing it (the operator only)."""
    run_dir = Path(run_dir)
    if not viewer.operator:
        raise RunError("only the operator publishes runs to the class")
    if not is_run(run_dir):
        raise RunError(f"not a finished run: {run_dir.name}")
    if published:
        write_json(run_dir / PUBLISHED, {"at": time.time()})
    else:
        (run_dir / PUBLISHED).unlink(missing_ok=True)


def delete_run(run_dir, viewer: Viewer) -> None:
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        raise RunError(f"not a run folder: {run_dir.name}")
    viewer.require_change(run_owner(run_dir), f"run {run_dir.name!r}")
    shutil.rmtree(run_dir)


def process_stamp() -> dict:
    """This process, as a later one can check it is still the same live process (a pid
    alone may be reused after a restart: its start time is compared too)."""
    return {"pid": os.getpid(), "start": _start_ticks(os.getpid())}


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
    except (OSError, ValueError, IndexError):
        return None


def writer_alive(stamp) -> bool:
    if not isinstance(stamp, dict) or not isinstance(stamp.get("pid"), int):
        return False
    try:
        os.kill(stamp["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return stamp.get("start") is None or _start_ticks(stamp["pid"]) == stamp.get("start")


def remove_stale_partials(runs_dir, older_than_s: float = 60.0) -> list[str]:
    """Remove what crashed or killed writers left under ``.partial/``: a run folder whose
    writing process is gone (a live CLI run elsewhere is left alone), and any other
    leftover (an import's staging folder) older than ``older_than_s``.  Returns the names."""
    base = Path(runs_dir) / PARTIAL
    removed = []
    for p in base.iterdir() if base.is_dir() else ():
        try:
            stamp = read_json(p / WRITER) if (p / WRITER).is_file() else None
        except (OSError, ValueError):
            stamp = None
        try:
            old = time.time() - p.stat().st_mtime > older_than_s
        except OSError:
            continue
        if (stamp is not None and not writer_alive(stamp)) or (stamp is None and old):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
