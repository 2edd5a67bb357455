"""``python -m core inside``: one JSON line, one stderr line and exit 2 for bad input, and
the per-stage change table with a RUN_DIR."""
import json
import os
import subprocess
import sys

import pytest

from core.cli import main
from tests.conftest import ROOT, make_run
from tests.test_inside import ants_bees_features  # noqa: F401 - the session's extracted features


def _cli(args, data_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFERLAB_DATA": str(data_dir), "TRANSFERLAB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "core", "inside", *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_one_json_line_from_the_cached_features(ants_bees_features):  # noqa: F811
    ds, _, data_dir, _ = ants_bees_features
    p = _cli([str(ds.root), "--weights", "imagenet"], data_dir)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key in ("knn_acc", "linear_probe_acc", "num_train", "num_val", "arch", "weights"):
        assert key in out, key
    assert (out["arch"], out["weights"], out["num_train"], out["num_val"]) == \
        ("mobilenet_v2", "imagenet:IMAGENET1K_V1", 245, 153)
    assert out["knn_acc"] >= 0.90 and out["feature_cache_hits"] == 2  # the session's extraction, not a second one
    assert "from the feature cache" in p.stderr and "stage_change" not in out


@pytest.mark.parametrize("args, says", [
    (["{missing}"], "not found"),
    (["{data}", "--arch", "resnet_999"], "unknown architecture"),
    (["{data}", "--weights", "{missing}.pth"], "weights file not found"),
    (["{data}", "--weights", "{notrun}"], "not a finished run"),
    (["{data}", "--k", "0"], "--k 0"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_split, tmp_path, capsys, args, says):
    (tmp_path / "notrun").mkdir()
    fill = {"missing": str(tmp_path / "nowhere"), "data": str(tiny_split), "notrun": str(tmp_path / "notrun")}
    assert main(["inside", *[a.format(**fill) for a in args]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], captured.err


def test_a_run_dir_adds_the_per_stage_change(tiny_split, tmp_path, capsys, monkeypatch, mobilenet_file):
    monkeypatch.setenv("TRANSFERLAB_FEATURE_DISK", "0")  # memory only: nothing left in the checkout's data folder
    run_dir = make_run(tiny_split, tmp_path / "runs", "tuned", arch="mobilenet_v2", weights="imagenet", freeze="none",
                       epochs=1, owner=None)
    assert main(["inside", str(tiny_split), "--weights", str(run_dir)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["weights"] == "run:tuned" and out["arch"] == "mobilenet_v2"
    assert out["start"].startswith("ImageNet weights")
    table = out["stage_change"]
    assert [r["stage"] for r in table][:2] == ["stem", "block16"] and len(table) == 9
    assert all(r["rel_change"] > 0 and 0 < r["cka"] <= 1.000001 and r["params"] > 0 for r in table)
    # A run and an --arch that is not its own: one line, exit 2.
    assert main(["inside", str(tiny_split), "--weights", str(run_dir), "--arch", "resnet18"]) == 2
    assert "does not match the run" in capsys.readouterr().err
