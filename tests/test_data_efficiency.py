"""The data-efficiency experiment: seeded stratified subsets, one feature pass for the
frozen arm, points saved as runs with a consistent sweep summary, through the queue and
the command line, and on real photos."""
import json
import time
from pathlib import Path

import pytest

from core.data.datasets import Dataset, scan_dataset
from core.errors import TransferLabError
from core.jobs.queue import TrainingQueue
from core.runs.store import list_runs, read_json
from core.training import data_efficiency as de
from core.training.experiment import ExperimentConfig
from core.training.trainer import TrainConfig
from tests.test_cli import cli


def _fake(per_class=(30, 12, 7)) -> Dataset:
    train = [(f"/x/c{c}/{i}.jpg", c) for c in range(len(per_class)) for i in range(per_class[c])]
    return Dataset(Path("/x"), [f"c{c}" for c in range(len(per_class))], train, [("/x/v.jpg", 0)])


def _cfg(data, **kw):
    train = TrainConfig(**{"epochs": 1, "batch_size": 8, **kw.pop("train", {})})
    return ExperimentConfig(data=str(data), train=train, **kw)


def test_subsets_are_seeded_stratified_nested_and_all_is_everything():
    ds = _fake()
    five = de.nested_subset(ds.train, 5, seed=0)
    assert [sum(1 for _, y in five if y == c) for c in range(3)] == [5, 5, 5]
    assert five == de.nested_subset(ds.train, 5, seed=0)  # seeded: the same draw again
    assert five != de.nested_subset(ds.train, 5, seed=1)
    ten = de.nested_subset(ds.train, 10, seed=0)
    assert set(five) < set(ten)  # nested for one seed
    assert [sum(1 for _, y in ten if y == c) for c in range(3)] == [10, 10, 7]  # a small class gives all it has
    assert de.nested_subset(ds.train, "all", seed=3) == ds.train
    assert five == sorted(five, key=ds.train.index)  # the training list's own order


def test_parsing_and_plan_refuse_bad_input_by_name():
    assert de.parse_ns("10, 2,all,2") == [2, 10, "all"]
    for bad in ("2,0", "two", ""):
        with pytest.raises(TransferLabError, match="images per class"):
            de.parse_ns(bad)
    assert de.parse_arms("scratch,frozen") == ["scratch", "frozen"]
    with pytest.raises(TransferLabError, match="magic"):
        de.parse_arms("frozen,magic")
    with pytest.raises(TransferLabError, match="pretrained weights"):
        de.plan(_cfg("/x", weights="none"), _fake(), [2], 1, ["frozen"])
    with pytest.raises(TransferLabError, match="seeds 0"):
        de.plan(_cfg("/x"), _fake(), [2], 0, ["frozen"])


def test_plan_orders_points_merges_whole_ns_into_all_and_sizes_batches():
    ds = _fake()  # largest class: 30 images
    sweep = de.plan(_cfg("/x", train={"batch_size": 32}), ds, [2, 10, 30, 50], 2, ["frozen", "scratch"], runs_dir="/r",
                    sweep_id="s1")
    assert sweep.ns == [2, 10, "all"] and sweep.dropped_ns == [30, 50] and sweep.seeds == [0, 1]
    assert [(p.arm, p.n, p.seed) for p in sweep.points[:3]] == [("frozen", 2, 0), ("frozen", 2, 1), ("frozen", 10, 0)]
    assert {p.arm for p in sweep.points[6:]} == {"scratch"} and len(sweep.points) == 12
    p = sweep.points[0]
    assert p.config.sweep == {"id": "s1", "arm": "frozen", "n": 2, "seed": 0} and p.config.freeze == "backbone"
    assert p.repeats == round(49 / 6) and len(p.train_list) == 6 * p.repeats  # the same steps as "all"
    scratch = sweep.points[6].config
    assert scratch.weights == "none" and scratch.freeze == "none" and scratch.train.schedule == "standard"
    plain = de.plan(_cfg("/x", train={"batch_size": 32}), ds, [2], 1, ["scratch"], repeat=False)
    assert plain.points[0].repeats == 1 and plain.points[0].config.train.batch_size == 6  # never above the subset
    # No batch, and no micro-batch slice, of a single image.
    assert de.point_batch_size(33, 32) == 31 and de.point_batch_size(49, 32) == 31 and de.point_batch_size(3, 32) == 3


def test_frozen_arm_extracts_features_once_for_the_whole_sweep(tiny_folders, mobilenet_file, isolated_dirs, monkeypatch):
    from core.training import features
    calls = []
    real = features.tail_inputs
    monkeypatch.setattr(features, "tail_inputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = scan_dataset(tiny_folders)
    sweep = de.plan(_cfg(tiny_folders, arch="mobilenet_v2", train={"epochs": 2}), ds, [2, 5], 2, ["frozen"])
    de.run_sweep(sweep)
    assert len(calls) == 2  # validation features + one training view, for the whole training split
    assert [p.feature_hits for p in sweep.points] == [0, 2, 2, 2]  # n 2, 5 x 2 seeds
    summary = read_json(sweep.path)
    assert summary["status"] == "done" and [p["status"] for p in summary["points"]] == ["done"] * 4
    runs = {r["name"]: r for r in list_runs(isolated_dirs / "runs")}
    assert set(runs) == {p.run for p in sweep.points}
    assert all(r["summary"]["path"] == "frozen-features" and r["config"]["sweep"]["id"] == sweep.id for r in runs.values())


def test_a_stopped_sweep_keeps_finished_points_and_a_consistent_summary(tiny_folders, isolated_dirs):
    q = TrainingQueue(concurrency=1)
    ds = scan_dataset(tiny_folders)
    sweep = de.plan(_cfg(tiny_folders, arch="mobilenet_v3_small", weights="none", train={"epochs": 3}), ds,
                    [2, 5, "all"], 1, ["scratch"])
    job = q.submit_sweep("a", "de", sweep)
    assert q.eta_seconds(job) > 0 and len(job.runs) == 3
    end = time.time() + 120
    while not (job.runs[0].status == "done" and job.runs[1].status == "running"):
        assert time.time() < end and job.active, [r.status for r in job.runs]
        time.sleep(0.02)
    q.stop(job)
    while job.active:
        assert time.time() < end + 30
        time.sleep(0.05)
    assert job.status == "stopped"
    summary = read_json(sweep.path)
    statuses = [p["status"] for p in summary["points"]]
    assert summary["status"] == "stopped" and statuses[0] == "done" and statuses[2] == "not run"
    saved = {r["name"] for r in list_runs(isolated_dirs / "runs")}
    assert saved == {p["run"] for p in summary["points"] if p["run"]} and summary["points"][0]["run"] in saved
    assert list(de.table(summary)) == ["scratch"] and list(de.table(summary)["scratch"]) == ["2"]


def test_cli_prints_one_json_line_and_saves_the_sweep(tiny_folders, tmp_path):
    runs = tmp_path / "runs"
    p = cli("data-efficiency", tiny_folders, "--arch", "mobilenet_v3_small", "--weights", "none", "--arms", "scratch",
            "--ns", "2,all", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--runs-dir", runs)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(p.stdout.strip().splitlines()) == 1 and "n=2" in p.stderr  # progress on stderr
    assert out["status"] == "done" and set(out["table"]["scratch"]) == {"2", "all"} and len(out["runs"]) == 2
    assert Path(out["summary"]).is_file() and len(list_runs(runs)) == 2
    bad = cli("data-efficiency", tiny_folders, "--ns", "2,lots", check=False)
    assert bad.returncode == 2 and "lots" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_real_photos_frozen_beats_scratch_with_few_images(ants_bees, mobilenet_file, isolated_dirs):
    ds = scan_dataset(ants_bees)
    # One n (10 per class) keeps the scratch arm, a full-length run per point, within the suite's time.
    sweep = de.plan(_cfg(ants_bees, arch="mobilenet_v2", train={"epochs": 2, "batch_size": 32}), ds, [10], 1,
                    ["frozen", "scratch"])
    de.run_sweep(sweep)
    summary = read_json(sweep.path)
    assert summary["status"] == "done" and summary["num_val"] == 153 and len(summary["points"]) == 2
    assert [p["num_train"] for p in summary["points"]] == [20, 20]
    acc = {(p["arm"], p["n"]): p["best_val_acc"] for p in summary["points"]}
    assert acc[("frozen", 10)] >= 0.8 and acc[("frozen", 10)] > acc[("scratch", 10)], acc
    runs = list_runs(isolated_dirs / "runs")
    assert len(runs) == 2 and all(len(r["config"]["sweep"]) == 4 for r in runs)
    split = read_json(Path(runs[0]["dir"]) / "split.json")
    assert len(split["val"]) == 153  # the same whole validation split for every point


@pytest.mark.slow
def test_train_button_runs_the_sweep_and_compare_plots_it(app, tmp_path, isolated_dirs, mobilenet_file):
    from tests.conftest import wait_for_jobs, write_image
    from tests.test_app_train import number, tiny_state
    from ui import state as S
    for split, n in (("train", 3), ("val", 2)):  # 3 per class: n = 2 and "all", 8 points in all
        for i in range(n):
            write_image(tmp_path / "few" / split / "red" / f"r{i}.jpg", (200 + i, 20, 30))
            write_image(tmp_path / "few" / split / "blue" / f"b{i}.jpg", (20, 30, 200 + i))
    at = app("pages/train.py", {**tiny_state(tmp_path / "few"), S.ARCH: "mobilenet_v2", S.WEIGHTS: "imagenet",
                                S.FREEZE: "backbone"})
    number(at, "Epochs").set_value(1)
    number(at, "Batch size").set_value(8)
    assert any("Data-efficiency experiment" in c.value or "frozen curve" in c.value for c in at.caption)
    next(b for b in at.button if "Data-efficiency" in b.label).click().run()
    wait_for_jobs(at.session_state[S.SESSION], timeout=900)
    at.run()
    assert not at.exception and not at.error
    assert any("Data efficiency done" in s.value for s in at.success)
    runs = list_runs(isolated_dirs / "runs")
    assert len(runs) == 8 and {r["config"]["sweep"]["arm"] for r in runs} == {"frozen", "scratch"}
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert any(h.value == "Data efficiency" for h in at.subheader)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"] for t in chart["data"]} == {"pretrained, frozen", "from scratch"}
    assert chart["layout"]["xaxis"]["type"] == "log"
    assert not next(m for m in at.multiselect if m.label == "Runs").options  # point runs are out of the list
    next(c for c in at.checkbox if "point runs" in c.label).check().run()
    assert len(next(m for m in at.multiselect if m.label == "Runs").options) == 8
