"""``bench/gpu_check.py --device cpu``: the dry run of the GPU check passes on this CPU,
without streamlit (the GPU machine has none), and writes every check's result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_dry_run_passes_without_streamlit(tmp_path):
    blocked = tmp_path / "site" / "streamlit"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('no streamlit on the GPU machine')\n")
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(blocked.parent)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert len(statuses) == 9 and set(statuses.values()) <= {"PASS", "SKIP"}, statuses
    assert statuses["frozen run, AMP"] == statuses["out of memory"] == statuses["predict + Grad-CAM race"] == "PASS"
    assert report["machine"]["cpu"]["model"] and "avx2" in report["machine"]["cpu"]
    assert proc.stdout.startswith("CPU: ") and "PASS: 9 of 9" in proc.stdout
