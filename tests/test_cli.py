"""The command line, end to end on the real ants/bees photos and MobileNetV2 weights."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.serving.predict import evaluate
from core.runs.store import load_run

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, check=True):
    env = {**os.environ, "TRANSFERLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    from core.paths import demo_dataset
    if demo_dataset() is None:
        pytest.skip("../shared/datasets/hymenoptera_data is absent")
    runs = tmp_path_factory.mktemp("runs")
    p = cli("train", demo_dataset(), "--arch", "mobilenet_v2", "--weights", "imagenet", "--freeze", "backbone",
            "--epochs", "3", "--runs-dir", runs, "--name", "frozen")
    lines = p.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines, runs


def test_train_frozen_reaches_90_percent(frozen_run):
    summary, lines, _ = frozen_run
    assert summary["best_val_acc"] >= 0.90
    assert summary["epochs"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert summary["num_train"] == 245 and summary["num_val"] == 153 and summary["skipped"] == 0
    assert summary["device"] == "cpu" and summary["seconds"] > 0
    assert sum(line.startswith("epoch") for line in lines) == 3


def test_saved_model_evaluates_to_the_recorded_accuracy(frozen_run):
    summary, _, _ = frozen_run
    ev = evaluate(summary["run_dir"])
    assert ev["accuracy"] == pytest.approx(summary["best_val_acc"], abs=1e-9)
    assert sum(map(sum, ev["confusion"])) == 153
    assert len(ev["misclassified"]) == round(153 * (1 - ev["accuracy"]))


def test_predict_json_lines_and_a_bad_file(frozen_run, ants_bees, tmp_path):
    summary, _, _ = frozen_run
    bee = sorted((ants_bees / "val" / "bees").iterdir())[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xffnot really")
    p = cli("predict", summary["run_dir"], bee, bad, "--topk", "2", check=False)
    assert p.returncode == 1
    good, err = [json.loads(line) for line in p.stdout.strip().splitlines()]
    assert good["image"] == str(bee) and [t["label"] for t in good["top"]][0] == "bees"
    assert abs(sum(t["prob"] for t in good["top"]) - 1) < 1e-5
    assert err["image"] == str(bad) and "error" in err
    assert cli("predict", summary["run_dir"], bee).returncode == 0


def test_runs_lists_the_run(frozen_run):
    _, _, runs = frozen_run
    out = json.loads(cli("runs", "--runs-dir", runs).stdout)
    assert [r["name"] for r in out["runs"]] == ["frozen"]


def test_scratch_runs_and_is_reported_honestly(ants_bees, tmp_path):
    # A slice of the real photos: the point is what is reported, and training the whole
    # network over all 398 photos took most of this file's time.
    small = tmp_path / "small"
    for split, n in (("train", 12), ("val", 8)):
        for cls in ("ants", "bees"):
            (small / split / cls).mkdir(parents=True)
            for f in sorted((ants_bees / split / cls).iterdir())[:n]:
                (small / split / cls / f.name).write_bytes(f.read_bytes())
    p = cli("train", small, "--weights", "none", "--freeze", "none", "--epochs", "2", "--batch-size", "8",
            "--runs-dir", tmp_path / "runs")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    run = load_run(summary["run_dir"])
    assert run["config"]["weights_loaded"] == "none" and run["load_report"] is None
    assert summary["num_train"] == 24 and summary["num_val"] == 16 and summary["epochs"] == 2
    assert 0.0 <= summary["best_val_acc"] <= 1.0 and summary["path"] == "plain"


def test_inspect(mobilenet_file):
    out = json.loads(cli("inspect", "--arch", "resnet18", "--num-classes", "3", "--freeze", "4").stdout)
    assert out["head"] == "fc" and out["in_features"] == 512 and out["num_classes"] == 3
    assert [s["name"] for s in out["stages"]][:5] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert out["stages"][4]["trainable"] == out["stages"][4]["params"] and out["stages"][3]["trainable"] == 0
    out = json.loads(cli("inspect", "--arch", "mobilenet_v2", "--weights", mobilenet_file, "--freeze", "backbone").stdout)
    assert out["load_report"]["counts"] == {"loaded": 312, "skipped_shape": 2, "missing": 2, "unexpected": 0}
    assert out["trainable_params"] == 1280 * 2 + 2


@pytest.mark.parametrize("args,message", [
    (["train", "/no/such/folder"], "dataset not found"),
    (["train", "{zip}"], "not a readable zip"),
    (["train", "{unsafe}"], "outside the target"),
    (["inspect", "--arch", "resnet19"], "unknown architecture 'resnet19'"),
    (["inspect", "--arch", "resnet18", "--weights", "imagenet"], "resnet18-f37072fd.pth"),
    (["inspect", "--arch", "resnet18", "--weights", "{evil}"], "needs code to load"),
    (["predict", "/no/run", "x.jpg"], "run not found"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    (tmp_path / "damaged.zip").write_bytes(b"PK\x03\x04junk")
    with zipfile.ZipFile(tmp_path / "unsafe.zip", "w") as z:
        z.writestr("../escape.jpg", b"x")
    import pickle
    with open(tmp_path / "evil.pth", "wb") as f:  # a pickle that needs a class: code, not tensors
        pickle.dump({"state_dict": zipfile.ZipInfo("a")}, f)
    subs = {"{zip}": tmp_path / "damaged.zip", "{unsafe}": tmp_path / "unsafe.zip", "{evil}": tmp_path / "evil.pth"}
    p = cli(*[subs.get(a, a) for a in args], check=False)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "escape.jpg").exists()


def test_fine_tune_without_rate_flags_takes_the_recipes_rates_and_a_typed_flag_wins(tiny_split, tmp_path):
    """At the CLI's default rate (0.001) fine_tune's head-only epoch left the head near chance
    (best 0.882 on ants/bees): the schedule brings its recipe for the flags not typed, and says
    so on stderr.  The JSON line reports the last epoch beside the best."""
    from core.cli import _experiment, build_parser
    from core.training.schedules import FINE_TUNE_RECIPE
    base = ("train", tiny_split, "--arch", "mobilenet_v3_small", "--weights", "none", "--freeze", "none",
            "--batch-size", "8", "--runs-dir", tmp_path)
    p = cli(*base, "--schedule", "fine_tune", "--epochs", "2")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    run = load_run(out["run_dir"])
    assert all(run["config"]["train"][k] == v for k, v in FINE_TUNE_RECIPE.items()), run["config"]["train"]
    assert f"--lr {FINE_TUNE_RECIPE['lr']:g}" in p.stderr and "a flag you type wins" in p.stderr
    assert out["last_val_acc"] == run["history"][-1]["val_acc"] == run["summary"]["last_val_acc"]

    def train_config(*args):  # what the same parsing gives, without training again
        return _experiment(build_parser().parse_args([str(a) for a in (*base, *args)])).train
    typed = train_config("--schedule", "fine_tune", "--lr", "0.001", "--unfreeze-div", "2")
    assert (typed.lr, typed.unfreeze_div) == (0.001, 2.0)  # typed, even at the tutorial's values: kept
    adam = train_config("--schedule", "fine_tune", "--optimizer", "adam")
    assert (adam.optimizer, adam.lr) == ("adam", 0.001)  # the recipe's 0.03 is an SGD rate
    standard = train_config()
    assert (standard.schedule, standard.lr, standard.unfreeze_div) == ("standard", 0.001, 2.0)  # the tutorial's


def test_predict_a_folder_and_a_zip_of_photos_in_one_go(frozen_run, ants_bees, tmp_path):
    """A folder (recursively, hidden files skipped) and a .zip are expanded into their
    photos, one JSON line each, in order; a missing path is one error line, not a crash."""
    import shutil
    import zipfile
    summary, _, _ = frozen_run
    folder = tmp_path / "mine" / "sub"
    folder.mkdir(parents=True)
    for p in sorted((ants_bees / "val" / "bees").iterdir())[:3]:
        shutil.copy(p, folder / p.name)
    (folder / ".hidden.jpg").write_bytes(b"x")
    with zipfile.ZipFile(tmp_path / "ants.zip", "w") as zf:
        for p in sorted((ants_bees / "val" / "ants").iterdir())[:2]:
            zf.write(p, f"ants/{p.name}")
    p = cli("predict", summary["run_dir"], tmp_path / "mine", tmp_path / "ants.zip", tmp_path / "missing.jpg", check=False)
    lines = [json.loads(line) for line in p.stdout.strip().splitlines()]
    assert p.returncode == 1 and len(lines) == 6
    said = [r["top"][0]["label"] for r in lines[:5]]
    assert sum(s == t for s, t in zip(said, ["bees"] * 3 + ["ants"] * 2)) >= 4  # a frozen ImageNet body, real photos
    assert lines[3]["image"].endswith("ants.zip/ants/" + sorted((ants_bees / "val" / "ants").iterdir())[0].name)
    assert lines[5]["image"].endswith("missing.jpg") and "cannot open" in lines[5]["error"]
