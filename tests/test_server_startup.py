"""The server's start-up (``ui/server.py``): it imports what pages import lazily (two first
visitors importing pandas at once from two script threads raised "partially initialized
module 'pandas'"), sweeps what a killed server left, starts the queue and prints the
operator link once; and the disk bounds it relies on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import ROOT

# Run in a fresh interpreter: which modules a page imports on its own can only be seen there.
PROBE = r"""
import json, sys
sys.path.insert(0, ROOT)
from ui.server import warm_imports
warm_imports()
before = set(sys.modules)
from streamlit.testing.v1 import AppTest
for page in ("pages/data.py", "pages/model.py", "pages/train.py", "pages/compare.py", "pages/predict.py",
             "pages/inside.py"):
    at = AppTest.from_file(ROOT + "/app.py", default_timeout=120)
    at.switch_page(page)
    at.run()
heavy = ("pandas", "pyarrow", "plotly", "altair", "torch", "torchvision", "numpy", "PIL", "safetensors")
late = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy)
print(json.dumps(late))
"""


def test_the_pages_import_no_heavy_library_that_start_up_did_not(isolated_dirs):
    env = {**os.environ, "TRANSFERLAB_DATA": str(isolated_dirs / "data"), "TRANSFERLAB_RUNS": str(isolated_dirs / "runs")}
    out = subprocess.run([sys.executable, "-c", f"ROOT = {str(ROOT)!r}\n" + PROBE], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_start_up_sweeps_a_dead_writers_partial_run_and_prints_the_link_once(isolated_dirs, capsys, monkeypatch):
    from core.runs.store import PARTIAL, WRITER, write_json
    from ui import server
    import ui.jobs
    monkeypatch.setattr(ui.jobs, "_QUEUE", None)  # a server of its own, on this test's data folder
    monkeypatch.setattr(server, "base_url", lambda: "http://localhost:8501")
    dead = isolated_dirs / "runs" / PARTIAL / "killed-run"
    dead.mkdir(parents=True)
    write_json(dead / WRITER, {"pid": 2**22 + 7, "start": 1})  # no such process
    write_json(dead / "history.json", [{"epoch": 1}])
    alive = isolated_dirs / "runs" / PARTIAL / "cli-run-in-progress"
    alive.mkdir()
    from core.runs.store import process_stamp
    write_json(alive / WRITER, process_stamp())  # this very process: a live writer
    server.start_up()
    out = capsys.readouterr().out
    assert out.count("?operator=") == 1 and "Keep this link to yourself" in out
    assert not dead.exists() and alive.exists()
    assert "1 partial runs" in out
    monkeypatch.setattr(ui.jobs, "_QUEUE", None)


def test_exports_are_a_bounded_cache_least_recently_offered_out_first(isolated_dirs):
    from core import disk
    runs = isolated_dirs / "runs"
    files = []
    for k in range(3):
        f = runs / f"run{k}" / "exports" / f"run{k}.onnx"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x" * 1000)
        (f.parent / f"run{k}.onnx.parity.json").write_text("{}")
        os.utime(f, (time.time() - 100 + k, time.time() - 100 + k))
        files.append(f)
    disk.touch(files[0])  # offered just now: kept longest
    disk.trim_exports(max_bytes=2100, runs_dir=runs)
    assert files[0].exists() and not files[1].exists() and files[2].exists()
    assert not (files[1].parent / "run1.onnx.parity.json").exists()  # its check goes with it


def test_the_feature_cache_on_disk_is_bounded(tmp_path):
    import torch
    from core.training.feature_cache import FeatureCache
    cache = FeatureCache(max_bytes=0, disk_dir=tmp_path, disk_max_bytes=3 * 4096 + 1000)
    for k in range(5):
        cache.put(f"k{k}", {"x": torch.zeros(1024)})  # 4 KiB each
        time.sleep(0.01)
    kept = sorted(p.stem for p in tmp_path.glob("*.safetensors"))
    assert kept == ["k2", "k3", "k4"]
    assert cache.get("k2") is not None  # read: now the most recent
