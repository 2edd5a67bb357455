"""Run bundles: a real ants/bees run packed, imported into another runs folder and used
as if trained there; hostile bundles refused by name with nothing left behind."""
from __future__ import annotations

import sys
import io
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch

from core.errors import TransferLabError
from core.runs.bundle import MANIFEST, import_bundle, write_bundle
from core.runs.store import list_runs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # importable by name: the sweep's workers re-import it
import export_sweep  # noqa: E402


def test_bundle_round_trip_predicts_the_same(ants_bees, mobilenet_file, tmp_path):
    from core.serving.predict import Predictor
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    run_dir, _, _ = run_experiment(ExperimentConfig(data=str(ants_bees), name="sent", train=TrainConfig(epochs=2)),
                                   runs_dir=tmp_path / "here")
    bundle = write_bundle(run_dir, tmp_path / "sent.transferlab.zip")
    with zipfile.ZipFile(bundle) as zf:  # the run folder's files and the manifest, nothing else
        assert sorted(Path(n).name for n in zf.namelist()) == sorted(
            [p.name for p in Path(run_dir).iterdir() if p.is_file()] + [MANIFEST])
    there = tmp_path / "elsewhere"
    imported = import_bundle(bundle, there, display_name="sent.transferlab.zip")
    assert [r["name"] for r in list_runs(there)] == ["sent"]
    config = json.loads((imported / "config.json").read_text())
    assert config["imported"]["from"] == "sent.transferlab.zip" and config["name"] == "sent"
    photos = sorted((ants_bees / "val" / "bees").iterdir())[:6] + sorted((ants_bees / "val" / "ants").iterdir())[:6]
    a, b = Predictor(run_dir), Predictor(imported)
    for photo in photos:
        pa, pb = a.predict(str(photo), 2), b.predict(str(photo), 2)
        assert [p["label"] for p in pa] == [p["label"] for p in pb]
        assert all(math.isclose(x["prob"], y["prob"], abs_tol=1e-5) for x, y in zip(pa, pb))
    # Imported twice: a second run, not an overwrite.
    again = import_bundle(bundle, there)
    assert again.name == "sent-2" and len(list_runs(there)) == 2


@pytest.fixture
def good_bundle(tmp_path) -> Path:
    run = export_sweep.random_run(tmp_path / "src", "mobilenet_v3_small", 64)
    return write_bundle(run, tmp_path / "good.zip")


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the bundle with ``change(name, data) -> [(name, data), ...]`` applied per entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for name, data in change(info.filename, zin.read(info)):
                zout.writestr(name, data)
    return dst


def _manifest_for(entries: dict[str, bytes]) -> bytes:
    import hashlib
    return json.dumps({"format": "transferlab-run-bundle", "version": 1, "run": "r",
                       "files": {n: hashlib.sha256(d).hexdigest() for n, d in entries.items()}}).encode()


def _consistent(src: Path, dst: Path, edit) -> Path:
    """Edit files then rewrite the manifest so the digests match: only the content is hostile."""
    with zipfile.ZipFile(src) as zin:
        files = {Path(n).name: zin.read(n) for n in zin.namelist() if not n.endswith(MANIFEST)}
    files = edit(files)
    with zipfile.ZipFile(dst, "w") as zout:
        for n, d in files.items():
            zout.writestr(f"r/{n}", d)
        zout.writestr(f"r/{MANIFEST}", _manifest_for(files))
    return dst


def _write(dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def _nan_weights(files):
    from safetensors.torch import load, save
    state = load(files["weights.safetensors"])
    # A float tensor: which key comes first depends on safetensors' file order (an int64
    # BatchNorm counter came first in CI), and an integer tensor cannot hold NaN.
    k = next(k for k, t in state.items() if t.is_floating_point())
    state[k] = torch.full_like(state[k], float("nan"))
    return {**files, "weights.safetensors": save(state)}


def _pickled_weights(files):
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buf)
    return {**files, "weights.safetensors": buf.getvalue()}


def _config(**change):
    def edit(files):
        config = json.loads(files["config.json"])
        config["model"] = {**config["model"], **change}
        return {**files, "config.json": json.dumps(config).encode()}
    return edit


HOSTILE = {
    "a dataset, not a bundle": (lambda src, dst: _rewrite(src, dst, lambda n, d: [] if n.endswith(MANIFEST) else [(n, d)]),
                                "not a transferlab run bundle"),
    "path traversal": (lambda src, dst: _rewrite(src, dst, lambda n, d: [(n, d)] + ([("../../evil.json", b"{}")] if n.endswith(MANIFEST) else [])),
                       "evil"),
    "tampered weights": (lambda src, dst: _rewrite(src, dst, lambda n, d: [(n, d[:-8] + b"\0" * 8 if n.endswith(".safetensors") else d)]),
                         "does not match the digest"),
    "an extra script": (lambda src, dst: _consistent(src, dst, lambda f: {**f, "run.py": b"import os"}), "run.py"),
    "a missing weights file": (lambda src, dst: _consistent(src, dst, lambda f: {k: v for k, v in f.items() if k != "weights.safetensors"}),
                               "weights.safetensors"),
    "NaN weights": (lambda src, dst: _consistent(src, dst, _nan_weights), "NaN|not finite|non-finite"),
    "a pickle as weights": (lambda src, dst: _consistent(src, dst, _pickled_weights), "safetensors|not"),
    "an unknown architecture": (lambda src, dst: _consistent(src, dst, _config(arch="evilnet")), "unknown architecture"),
    "a billion classes": (lambda src, dst: _consistent(src, dst, _config(num_classes=10**9)), "classes"),
    "config not JSON": (lambda src, dst: _consistent(src, dst, lambda f: {**f, "config.json": b"\xff{"}), "config.json"),
    "a newer version": (lambda src, dst: _rewrite(src, dst, lambda n, d: [(n, d.replace(b'"version": 1', b'"version": 7')
                                                                              if n.endswith(MANIFEST) else d)]), "version 7"),
    "not a zip": (lambda src, dst: _write(dst, b"hello"), "not a readable zip"),
    "cut short": (lambda src, dst: _write(dst, src.read_bytes()[:4000]), "cut short|not a readable zip"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bundle_is_refused_and_leaves_nothing(good_bundle, tmp_path, case):
    make, why = HOSTILE[case]
    bad = make(good_bundle, tmp_path / "bad.zip")
    runs = tmp_path / "runs"
    with pytest.raises(TransferLabError, match=why) as e:
        import_bundle(bad, runs, display_name="upload.zip")
    assert "upload.zip" in str(e.value) and str(tmp_path) not in str(e.value)  # the user's name, not the server's path
    assert list_runs(runs) == []
    leftovers = [p for p in runs.rglob("*") if p.name != ".partial"] if runs.exists() else []
    assert leftovers == [] and not (tmp_path.parent / "evil.json").exists()


def test_imported_split_never_points_into_this_machine(good_bundle, tmp_path):
    """A bundle's split names a folder; after import the run has no folder, so Compare
    shows no files from this server, whatever the bundle claimed."""
    from core.serving.predict import evaluate
    bad = _consistent(good_bundle, tmp_path / "spy.zip", lambda f: {**f, "split.json": json.dumps(
        {"root": "/etc", "val": [["passwd", 0]], "train": []}).encode()})
    run = import_bundle(bad, tmp_path / "runs")
    assert json.loads((run / "split.json").read_text())["root"] is None
    with pytest.raises(TransferLabError, match="no validation images on this machine"):
        evaluate(run)
