"""The whole CUDA path in one command, for the day a GPU is lent (issue #20):

    python bench/gpu_check.py [--device cuda|cpu] [--json PATH]

Self-contained: synthetic photos in a temporary folder, weights "none", nothing
downloaded; runs, features and measurements stay in that folder.  Under five minutes on
one GPU; ``--device cpu`` is a dry run of every check at small sizes (CI runs it).  Each
check prints PASS, FAIL or SKIP with its figures, and the JSON (``--json``) holds them
all, with the CPU's model and flags and the GPU's name beside them.  Exit status 1 when
any check failed.

It imports nothing that imports streamlit, and only APIs of torch 2.11 and torchvision
0.26 (what the GPU machine has), so it runs where the dashboard is not installed.  The
checks themselves are in ``gpu_checks.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _isolate(folder: Path) -> None:
    """Runs, the feature cache and speed measurements in ``folder``, never the checkout's;
    nothing fetched (set before ``core`` is imported: paths are read at import)."""
    os.environ["TRANSFERLAB_RUNS"] = str(folder / "runs")
    os.environ["TRANSFERLAB_DATA"] = str(folder / "data")
    os.environ["TRANSFERLAB_SPEED"] = str(folder / "speed")
    os.environ["TRANSFERLAB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))


def machine(device) -> dict:
    import torch
    from core.device import cpu_facts, cpu_line
    facts = {"cpu": cpu_facts(), "cpu_line": cpu_line(), "torch": torch.__version__, "python": sys.version.split()[0],
             "device": str(device)}
    try:
        import torchvision
        facts["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        facts.update(gpu=torch.cuda.get_device_name(device), gpus=torch.cuda.device_count(), cuda=torch.version.cuda,
                     bf16=torch.cuda.is_bf16_supported(), cudnn_tf32=torch.backends.cudnn.allow_tf32,
                     matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    return facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--json", help="write the results here as JSON")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="transferlab-gpu-check-") as tmp:
        _isolate(Path(tmp))
        import torch
        if a.device == "cuda" and not torch.cuda.is_available():
            print("error: no CUDA GPU here; --device cpu runs the dry run", file=sys.stderr)
            return 2
        import gpu_checks
        device = torch.device(a.device)
        facts = machine(device)
        print(f"CPU: {facts['cpu_line']}", flush=True)
        if device.type == "cuda":
            print(f"GPU: {facts['gpu']} (x{facts['gpus']}), CUDA {facts['cuda']}, bf16 {facts['bf16']}, "
                  f"TF32 convolutions {facts['cudnn_tf32']}", flush=True)
        print(f"torch {facts['torch']}, torchvision {facts.get('torchvision')}, Python {facts['python']}", flush=True)
        ctx = gpu_checks.Context.make(device, Path(tmp))
        results, t0 = [], time.perf_counter()
        for name, check in gpu_checks.CHECKS:
            t = time.perf_counter()
            try:
                status, note, figures = check(ctx)
            except Exception as e:  # noqa: BLE001 - a check that crashes is a failed check; the others still run
                status, note, figures = "FAIL", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", {
                    "trace": traceback.format_exc()[-2000:]}
            seconds = time.perf_counter() - t
            results.append({"name": name, "status": status, "note": note, "seconds": round(seconds, 2), **figures})
            print(f"{status:4}  {name:<24} {seconds:6.1f}s  {note}", flush=True)
        failed = [r["name"] for r in results if r["status"] == "FAIL"]
        total = time.perf_counter() - t0
        print(f"{'FAIL' if failed else 'PASS'}: {len(results) - len(failed)} of {len(results)} checks passed or "
              f"skipped in {total:.0f}s" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps({"machine": facts, "seconds": round(total, 1), "passed": not failed,
                                                "checks": results}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
