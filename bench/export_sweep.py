"""Which architectures export, to which format, and agree with PyTorch (a script and a test's engine).

For each architecture: a run folder with random weights and a tiny input (64 px where
the network allows it), exported to ONNX and TorchScript through ``export_run`` (the
same code as the CLI and the page), each checked on seeded random inputs.  Prints one
row per architecture and format with the exporter used, seconds, size and the parity
numbers, or why it failed.

    python bench/export_sweep.py [--archs resnet18,vit_b_16] [--formats onnx,torchscript] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (architecture, input size, extra build arguments): 64 px unless the network needs more.
ARCHS = [("alexnet", 64, {}), ("convnext_tiny", 64, {}), ("densenet121", 64, {}), ("efficientnet_b0", 64, {}),
         ("googlenet", 64, {}), ("inception_v3", 96, {}), ("mnasnet0_5", 64, {}), ("mobilenet_v2", 64, {}),
         ("mobilenet_v3_small", 64, {}), ("regnet_y_400mf", 64, {}), ("resnet18", 64, {}),
         ("shufflenet_v2_x0_5", 64, {}), ("squeezenet1_1", 64, {}), ("swin_t", 64, {}),
         ("vit_b_16", 64, {"image_size": 64})]


def random_run(runs_dir: Path, arch: str, size: int, build_kwargs: dict | None = None, hidden: int = 0,
               dropout: float = 0.0, num_classes: int = 3) -> Path:
    """A finished-looking run of ``arch`` with random weights (no validation images)."""
    import torch

    from core.data.transforms import TransformSpec
    from core.models.zoo import ModelSpec, instantiate
    from core.runs.store import save_weights, write_json
    spec = ModelSpec(arch, num_classes, hidden, dropout, dict(build_kwargs or {}))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = instantiate(spec).eval()
    run = runs_dir / f"{arch}-{size}px{'-hidden' if hidden else ''}"
    run.mkdir(parents=True)
    write_json(run / "config.json", {"arch": arch, "name": run.name, "weights": "none", "weights_loaded": "none",
                                     "model": spec.to_dict(),
                                     "transform": TransformSpec(crop_size=size, resize_size=size + size // 7).to_dict()})
    write_json(run / "classes.json", [f"class {k}" for k in range(num_classes)])
    write_json(run / "summary.json", {"best_val_acc": None, "best_epoch": None, "epochs": 0})
    save_weights(model.state_dict(), run / "weights.safetensors")
    return run


def sweep(archs=ARCHS, formats=("onnx", "torchscript"), work: Path | None = None, echo=print) -> list[dict]:
    from core.errors import TransferLabError
    from core.serving.export import export_run
    work = Path(work or tempfile.mkdtemp(prefix="export-sweep-"))
    rows = []
    for arch, size, kwargs in archs:
        run = random_run(work, arch, size, kwargs)
        for fmt in formats:
            t0 = time.perf_counter()
            try:
                r = export_run(run, fmt)
                row = {"arch": arch, "format": fmt, "ok": True, "exporter": r["exporter"], "bytes": r["bytes"],
                       "max_abs_logit_diff": r["max_abs_logit_diff"], "top1_agreement": r["top1_agreement"]}
            except TransferLabError as e:
                row = {"arch": arch, "format": fmt, "ok": False, "why": str(e)}
            except Exception as e:  # noqa: BLE001 - a sweep reports every failure and goes on
                row = {"arch": arch, "format": fmt, "ok": False, "why": f"{type(e).__name__}: {e}"[:300]}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            echo(f"{arch:20s} {fmt:12s} " + (f"ok   {row['exporter']:38s} {row['seconds']:6.1f}s {row['bytes'] / 2**20:7.1f} MB "
                                              f"max|Δ| {row['max_abs_logit_diff']:.1e}" if row["ok"] else
                                              f"FAIL {row['seconds']:6.1f}s {row['why']}"))
    return rows


def _sweep_one(args) -> list[dict]:
    arch, size, kwargs, formats, work = args
    import torch
    torch.set_num_threads(1)  # one architecture per core: tracing is mostly single-threaded Python
    return sweep([(arch, size, kwargs)], formats, work, echo=lambda line: None)


def parallel_sweep(archs=ARCHS, formats=("onnx", "torchscript"), work: Path | None = None, workers: int = 2) -> list[dict]:
    """``sweep`` over ``workers`` processes, the rows in the order of ``archs``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    work = Path(work or tempfile.mkdtemp(prefix="export-sweep-"))
    jobs = [(arch, size, kwargs, tuple(formats), work) for arch, size, kwargs in archs]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [row for rows in pool.map(_sweep_one, jobs) for row in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=None, help="comma-separated subset of the sweep's architectures")
    ap.add_argument("--formats", default="onnx,torchscript")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from core.device import configure_threads, cpu_line
    configure_threads()
    chosen = [x for x in ARCHS if not a.archs or x[0] in a.archs.split(",")]
    print(cpu_line())
    rows = sweep(chosen, tuple(a.formats.split(",")))
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} exports agree with PyTorch")
    if a.json:
        Path(a.json).write_text(json.dumps({"cpu": cpu_line(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
