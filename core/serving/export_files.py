"""Where a run's exports live and which of them passed their check: read by the export
itself (``export.py``) and by prediction (``predict.py``), which runs a checked ONNX
export with onnxruntime.  Nothing here imports a model or an exporter."""
from __future__ import annotations

import json
from pathlib import Path

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}


def exports_dir(run_dir) -> Path:
    return Path(run_dir) / "exports"


def export_path(run_dir, fmt: str) -> Path:
    return exports_dir(run_dir) / f"{Path(run_dir).name}{FORMATS[fmt]}"


def cached_export(run_dir, fmt: str) -> dict | None:
    """The report of an earlier export of this run that passed and is newer than its weights."""
    path = export_path(run_dir, fmt)
    report = read_report(path)
    weights = Path(run_dir) / "weights.safetensors"
    if report and report.get("ok") and path.is_file() and weights.is_file() \
            and path.stat().st_mtime >= weights.stat().st_mtime:
        return {**report, "path": str(path)}
    return None


def read_report(path: Path) -> dict | None:
    try:
        with open(path.with_name(path.name + ".parity.json"), encoding="utf-8") as f:
            report = json.load(f)
        return report if isinstance(report, dict) else None
    except (OSError, ValueError):
        return None
