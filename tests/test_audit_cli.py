"""``python -m core audit``: one JSON line with the four findings and counts, read from the
session's cached features; bad input is one stderr line and exit 2."""
import json
import os
import subprocess
import sys

import pytest

from core.cli import main
from tests.conftest import ROOT


def test_one_json_line_from_the_cached_features(audited):  # noqa: F811
    planted, report, _, _, data_dir, *_ = audited
    env = {**os.environ, "TRANSFERLAB_DATA": str(data_dir), "TRANSFERLAB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "core", "audit", str(planted.root), "--seed", "0"], check=False, cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["cached"] is True  # the session's extraction, not a second one
    for key in ("label_issues", "near_duplicates", "leaks", "outliers", "counts"):
        assert key in out, key
    assert out["counts"] == {"label_issues": len(out["label_issues"]), "near_duplicates": 0, "leaks": 5,
                             "outliers": len(out["outliers"]), "train": 248, "val": 158}
    assert set(out["label_issues"][0]) == {"path", "split", "given", "suggested", "score"}
    assert set(out["leaks"][0]) >= {"path", "other", "similarity"} and set(out["outliers"][0]) >= {"path", "score"}
    scores = [r["score"] for r in out["label_issues"]]
    assert scores == sorted(scores)  # most suspicious (least confident in the given label) first
    assert out["label_issues"] == report.to_json()["label_issues"]
    assert "auditing 248 training and 158 validation photos" in p.stderr


@pytest.mark.parametrize("args, says", [
    (["{missing}"], "not found"),
    (["{data}", "--arch", "resnet_999"], "unknown architecture"),
    (["{data}", "--weights", "none"], "--weights none"),
    (["{data}", "--weights", "{missing}.pth"], "weights file not found"),
    (["{data}", "--val-split", "1.5"], "val split"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_split, tmp_path, capsys, args, says):
    fill = {"missing": str(tmp_path / "nowhere"), "data": str(tiny_split)}
    assert main(["audit", *[a.format(**fill) for a in args]]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], captured.err
