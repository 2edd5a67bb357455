"""Seeded fuzz of the run-folder boundary (``load_run``, ``Predictor``) and of the CLI.

A real tiny run (MobileNetV3-small from scratch, one epoch) is copied and one of its
files damaged in many seeded ways: the result is a working predictor or a ``RunError``
naming the run, never a KeyError or a traceback.  ``python -m core predict`` and
``inspect`` on hostile input exit 2 with exactly one line on stderr.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from core.cli import main as cli_main
from core.errors import RunError
from core.serving.predict import Predictor
from core.runs.store import load_weights
from tests.conftest import make_run, write_image
from tests.test_fuzz_kit import Tally, cut_offsets, flipped, random_blobs, report_at_end

TALLY = Tally("run folders: load_run / Predictor")
ROOT = Path(__file__).resolve().parent.parent

_report = report_at_end(TALLY)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzzrun")
    for i in range(6):
        write_image(d / "data" / "red" / f"r{i}.jpg", (200 + 5 * i, 20, 30))
        write_image(d / "data" / "blue" / f"b{i}.jpg", (20, 30, 200 + 5 * i))
    return Path(make_run(d / "data", d / "runs", name="tiny"))


MISSING = object()  # a file left out of a copy


class Copies:
    """Copies of the run, hard-linked (the weights are megabytes), each with one file replaced."""

    def __init__(self, run: Path, where: Path):
        self.run, self.where, self.n = run, where, 0

    def make(self, file: str, content) -> Path:
        self.n += 1
        dest = self.where / f"tiny-copy-{self.n}"
        dest.mkdir(parents=True)
        for f in self.run.iterdir():
            os.link(f, dest / f.name)
        target = dest / file
        target.unlink()  # never write through a hard link into the original
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif content == "folder":
            target.mkdir()
        elif content is not MISSING:
            target.write_text(json.dumps(content))
        return dest


def attempt(run_dir: Path, case: str, expect_error: bool = False) -> str:
    try:
        p = Predictor(run_dir, "cpu")
    except RunError as e:
        msg = str(e)
        assert run_dir.name in msg and "\n" not in msg, msg
        TALLY.add(case, f"RunError: {msg}", run_dir.name)
        return msg
    assert not expect_error, f"{case}: {run_dir.name} loaded"
    top = p.predict(Image.new("RGB", (50, 40), (200, 20, 30)), topk=2)
    assert len(top) == 2 and abs(sum(t["prob"] for t in top) - 1) < 1e-4
    TALLY.add(case, "loads and predicts")
    return ""


def _mutations(config: dict, seed: int) -> dict:
    """``config`` with one seeded leaf of the sections a predictor reads (model, transform)
    replaced by a value of another type."""
    rng = random.Random(seed)
    config = json.loads(json.dumps(config))
    node = config[rng.choice(["model", "transform"])]
    while True:
        key = rng.choice(sorted(node))
        if isinstance(node[key], dict) and node[key] and rng.random() < 0.7:
            node = node[key]
            continue
        node[key] = rng.choice([None, -1, 0, "", "x", [], {}, 1e308, True, [1, 2], 10**12])
        return config


def test_damaged_config_json(run, tmp_path):
    copies, cfg = Copies(run, tmp_path), json.loads((run / "config.json").read_text())
    raw = (run / "config.json").read_bytes()
    for label, blob in [("empty", b""), ("not JSON", b"{"), ("bad UTF-8", b'{"model": "\xff"}'),
                        ("nested 100k deep", b"[" * 100_000 + b"]" * 100_000),
                        *[(f"cut at {c}", raw[:c]) for c in cut_offsets(len(raw), 4, 1)],
                        *[(name, blob) for name, blob in random_blobs(3, (5, 100, 4096))]]:
        assert "config.json is not readable JSON" in attempt(copies.make("config.json", blob), "config.json: bytes", True)
    for shape in ([], None, "string", 3):
        assert "not an object" in attempt(copies.make("config.json", shape), "config.json: not an object", True)
    attempt(copies.make("config.json", "folder"), "config.json: a folder", True)
    assert "config.json is missing" in attempt(copies.make("config.json", MISSING), "config.json: missing", True)
    m, t = cfg["model"], cfg["transform"]
    edits = {"no model": {**cfg, "model": None}, "no transform": {k: v for k, v in cfg.items() if k != "transform"},
             "unknown arch": {**cfg, "model": {**m, "arch": "resnet19"}}, "arch a number": {**cfg, "model": {**m, "arch": 5}},
             "no arch": {**cfg, "model": {k: v for k, v in m.items() if k != "arch"}},
             "unknown model field": {**cfg, "model": {**m, "bogus": 1}},
             **{f"num_classes {v!r}": {**cfg, "model": {**m, "num_classes": v}} for v in (3, "2", True, -1, 10**12)},
             **{f"hidden {v!r}": {**cfg, "model": {**m, "hidden": v}} for v in (-1, 10**9, 1.5)},
             **{f"dropout {v!r}": {**cfg, "model": {**m, "dropout": v}} for v in (2, "x", None)},
             "build kwargs refused": {**cfg, "model": {**m, "build_kwargs": {"dropout": 7}}},
             "build kwargs a list": {**cfg, "model": {**m, "build_kwargs": [1]}},
             **{f"crop {v!r}": {**cfg, "transform": {**t, "crop_size": v}} for v in (0, "224", 10**6, 2.5)},
             "mean of 2": {**cfg, "transform": {**t, "mean": [0.5, 0.5]}}, "std zero": {**cfg, "transform": {**t, "std": [0, 0, 0]}},
             **{f"interpolation {v!r}": {**cfg, "transform": {**t, "interpolation": v}} for v in ("cubic", [1])}}
    for label, content in edits.items():
        assert "is damaged: config.json" in attempt(copies.make("config.json", content), "config.json: a field edited", True)
    for seed in range(24):
        attempt(copies.make("config.json", _mutations(cfg, seed)), "config.json: seeded mutation")


def test_damaged_classes_and_summary(run, tmp_path):
    copies = Copies(run, tmp_path)
    for content in (b"", b"[", b"\xff\xfe", [], ["red"], ["red", "red"], [1, 2], {"a": 1}, "red", ["blue", "red", "green"],
                    ["blue", ""], None):
        attempt(copies.make("classes.json", content), "classes.json damaged", expect_error=True)
    for content in (b"", b"{", [], "done", 3):
        attempt(copies.make("summary.json", content), "summary.json damaged", expect_error=True)
    msg = attempt(copies.make("summary.json", MISSING), "summary.json missing", expect_error=True)
    assert "is not a finished run" in msg
    for content in (b"{", {"epoch": 1}):  # optional files must be readable and of their shape when present
        attempt(copies.make("history.json", content), "history.json damaged", expect_error=True)


def test_damaged_weights(run, tmp_path):
    copies, raw = Copies(run, tmp_path), (run / "weights.safetensors").read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    assert "weights.safetensors is missing" in attempt(copies.make("weights.safetensors", MISSING), "weights missing", True)
    for cut in cut_offsets(len(raw), 6, 2):
        attempt(copies.make("weights.safetensors", raw[:cut]), "weights cut short", expect_error=True)
    for name, blob in random_blobs(4, (0, 8, 4096)):
        attempt(copies.make("weights.safetensors", blob), "weights random bytes", expect_error=True)
    for seed in range(8):
        attempt(copies.make("weights.safetensors", flipped(raw, seed, 0, header)), "weights flip in header")
    for seed in range(2):  # no checksum in the format: only NaN/inf can tell (below)
        attempt(copies.make("weights.safetensors", flipped(raw, seed, header, len(raw))), "weights flip in data")
    entries = json.loads(raw[8:header])
    name = next(k for k, v in sorted(entries.items()) if isinstance(v, dict) and v["dtype"] == "F32")
    at = header + entries[name]["data_offsets"][0] + 4  # the second float32 of that tensor
    poisoned = bytearray(raw)
    poisoned[at + 3] |= 0x7F  # its exponent all ones: one flipped byte does it
    poisoned[at + 2] |= 0x80
    msg = attempt(copies.make("weights.safetensors", bytes(poisoned)), "weights NaN/inf", expect_error=True)
    assert f"refused weights.safetensors: tensor {name!r} holds NaN or infinite values" in msg
    state = load_weights(run)
    for label, other in (("a key renamed", {("x" + k if i == 0 else k): v for i, (k, v) in enumerate(state.items())}),
                         ("a shape changed", {**state, "classifier.3.bias": torch.zeros(3)}),
                         ("another network", {"fc.weight": torch.zeros(2, 4)})):
        path = tmp_path / f"{label}.safetensors"
        save_file({k: v.contiguous() for k, v in other.items()}, str(path))
        msg = attempt(copies.make("weights.safetensors", path.read_bytes()), "weights of another model", True)
        assert "does not fit the model its config.json describes" in msg


def test_cli_predict_exits_2_with_one_line(run, tmp_path, capsys):
    copies = Copies(run, tmp_path)
    img = write_image(tmp_path / "photo.jpg", (200, 20, 30))
    hostile = [copies.make("config.json", b"{"), copies.make("classes.json", ["red"]), copies.make("summary.json", b""),
               copies.make("weights.safetensors", b"hello"), copies.make("weights.safetensors", MISSING),
               copies.make("config.json", {"model": {"arch": "resnet19"}}), tmp_path / "no-such-run"]
    for run_dir in hostile:
        rc = cli_main(["predict", str(run_dir), str(img), "--device", "cpu"])
        out, err = capsys.readouterr()
        assert rc == 2 and out == "" and err.count("\n") == 1 and run_dir.name in err, (run_dir.name, err)
        TALLY.add("CLI predict on a damaged run (in-process)", f"exit {rc}, one line on stderr")
    bad_images = [(tmp_path / "five.jpg", b"hello"), (tmp_path / "empty.jpg", b""), (tmp_path / "cut.jpg", img.read_bytes()[:300])]
    for path, blob in bad_images:
        path.write_bytes(blob)
    rc = cli_main(["predict", str(run), str(img), *[str(p) for p, _ in bad_images], str(tmp_path / "missing.jpg")])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 1 and err == "" and "top" in rows[0] and [("error" in r) for r in rows[1:]] == [True] * 4
    assert [r["error"] for r in rows[1:3]] == ["not an image this app can read (JPEG, PNG, WebP, BMP, GIF or TIFF)", "empty file"]
    TALLY.add("CLI predict, hostile images (in-process)", "exit 1, a JSON error line per bad image")
    env = {**os.environ, "TRANSFERLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "core", "predict", str(hostile[3]), str(img)], capture_output=True,
                       text=True, cwd=ROOT, env=env)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith(f"error: run '{hostile[3].name}': weights.safetensors is not a readable safetensors file")
    TALLY.add("CLI predict on a damaged run (subprocess)", f"exit {p.returncode}, one line on stderr")


def test_list_runs_leaves_out_damaged_runs(tmp_path):
    """The run list (Compare, Predict, `python -m core runs`) skips a damaged run instead of failing."""
    from core.runs.store import list_runs
    for name, config in (("bad-utf8", b"\xff\xfe{"), ("not-object", b"[1, 2]"), ("odd-created", b'{"created": "x"}'),
                         ("good", b'{"created": 1.0}')):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_bytes(config)
        (d / "summary.json").write_bytes(b'{"best_val_acc": 0.5}')
    assert sorted(r["name"] for r in list_runs(tmp_path)) == ["good", "odd-created"]
