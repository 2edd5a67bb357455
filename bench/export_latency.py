"""One photo through a run's model: onnxruntime vs PyTorch eager (and the Predict page's
BatchNorm-folded copy), on this CPU.  Preprocessing is done once; the figures are the
model alone, median over repeats after warm-up, batch 1.

    python bench/export_latency.py RUN_DIR PHOTO [--repeats 50]

The run is exported to ONNX first if it has no checked export yet.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median_ms(fn, repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("photo")
    ap.add_argument("--repeats", type=int, default=50)
    a = ap.parse_args()
    import onnxruntime as ort
    import torch

    from core.data.images import load_rgb
    from core.device import configure_threads, cpu_line
    from core.serving.export import cached_export, export_run, load_snippet
    from core.serving.predict import Predictor
    configure_threads()
    report = cached_export(a.run_dir, "onnx") or export_run(a.run_dir, "onnx")
    p = Predictor(a.run_dir, "cpu")
    x = p.transform(load_rgb(a.photo)).unsqueeze(0)
    eager = p.model.eval()
    session = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    xn = x.numpy()
    rows = []
    with torch.inference_mode():
        rows.append(("PyTorch eager (channels_last)", median_ms(lambda: eager(x.contiguous(memory_format=torch.channels_last)), a.repeats)))
        rows.append(("PyTorch, BatchNorm folded (Predict page)",
                     median_ms(lambda: p.fast_model(x.contiguous(memory_format=torch.channels_last)), a.repeats)))
    rows.append(("onnxruntime (CPUExecutionProvider)", median_ms(lambda: session.run(None, {name: xn}), a.repeats)))
    run, _ = load_snippet("onnx").load(report["path"])
    assert run(xn).argmax() == eager(x).argmax()  # the same answer, or the timing means nothing
    print(cpu_line())
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {torch.get_num_threads()} threads, "
          f"run {Path(a.run_dir).name} ({p.run['config'].get('arch')}), batch 1, median of {a.repeats}")
    for label, ms in rows:
        print(f"  {label:42s} {ms:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
