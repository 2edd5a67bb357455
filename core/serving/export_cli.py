"""The CLI's take-away commands: ``export``, ``bundle`` and ``import-bundle``.

Same contract as the rest of ``python -m core``: one JSON line per result on stdout,
progress on stderr, bad input exits 2 with one line.  An export whose parity check
fails prints its report (so a script sees the numbers) and then fails.
"""
from __future__ import annotations

import json
import sys


def cmd_export(a) -> int:
    from core.serving.export import FORMATS, ExportError, export_run
    formats = list(FORMATS) if a.format == "all" else [a.format]
    failed = 0
    for fmt in formats:
        print(f"exporting {a.run_dir} to {fmt} and checking it against the PyTorch model…", file=sys.stderr, flush=True)
        try:
            report = export_run(a.run_dir, fmt, a.out, max_images=a.max_images)
        except ExportError as e:
            if len(formats) == 1:
                raise
            print(f"error: {' '.join(str(e).splitlines())}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(report, ensure_ascii=False), flush=True)
    return 2 if failed else 0


def cmd_bundle(a) -> int:
    from core.runs.bundle import write_bundle
    path = write_bundle(a.run_dir, a.out)
    print(json.dumps({"bundle": str(path), "bytes": path.stat().st_size}, ensure_ascii=False))
    return 0


def cmd_import_bundle(a) -> int:
    from core.runs.bundle import import_bundle
    run_dir = import_bundle(a.bundle, a.runs_dir)
    print(json.dumps({"run_dir": str(run_dir), "name": run_dir.name}, ensure_ascii=False))
    return 0


def add_export_commands(sub, runs_dir: str) -> None:
    from core.serving.export import FORMATS
    e = sub.add_parser("export", help="export a run to ONNX, TorchScript or .safetensors, checked against the model")
    e.add_argument("run_dir")
    e.add_argument("--format", choices=[*FORMATS, "all"], default="onnx")
    e.add_argument("--out", default=None, help="file or folder (default: RUN_DIR/exports/)")
    e.add_argument("--max-images", type=int, default=None, help="check parity on at most this many validation images")
    e.set_defaults(fn=cmd_export)

    b = sub.add_parser("bundle", help="pack a run into one .zip another installation can import")
    b.add_argument("run_dir")
    b.add_argument("--out", default=None, help="file or folder (default: RUN_DIR/exports/)")
    b.set_defaults(fn=cmd_bundle)

    i = sub.add_parser("import-bundle", help="check and add a run bundle (.zip) to the runs folder")
    i.add_argument("bundle")
    i.add_argument("--runs-dir", default=runs_dir)
    i.set_defaults(fn=cmd_import_bundle)
