"""Validation sets of runs before and after cleaning: told apart, described, and both runs
scored on the cleaned one; Compare says so (AppTest)."""
import pytest

from core.access import Viewer
from core.audit import cleaned, valsets
from core.runs.store import load_run
from core.training.experiment import ExperimentConfig, run_experiment
from core.training.trainer import TrainConfig
from tests.conftest import VISITOR, owner_of_key
from ui import state as S

A = Viewer(owner_of_key(VISITOR))


@pytest.fixture
def before_after(isolated_dirs, tiny_split):
    """Two tiny runs of the visitor: the source as it is, and a cleaning that drops a val
    photo and files another under the other class."""
    source = cleaned.make_source("folder", str(tiny_split), "tinysplit", 0.2, 0, A.owner)
    c = cleaned.create(source, A)
    cleaned.exclude(c.id, A, ["val/red/r0.jpg"])
    cleaned.relabel(c.id, A, {"val/blue/b1.png": "red"}, ["blue", "red"])
    runs = {}
    for name, cleaning in (("before", None), ("after", c.id)):
        cfg = ExperimentConfig(data=str(tiny_split), arch="mobilenet_v3_small", weights="none", freeze="none",
                               name=name, train=TrainConfig(epochs=1, batch_size=8), confine=True, owner=A.owner,
                               cleaning=cleaning)
        runs[name] = str(run_experiment(cfg, runs_dir=isolated_dirs / "runs")[0])
    return runs, c


def test_sets_are_told_apart_and_described(before_after):
    runs, _ = before_after
    before, after = (valsets.val_photos(load_run(runs[k])) for k in ("before", "after"))
    assert len(before) == 8 and len(after) == 7
    assert valsets.digest(before) != valsets.digest(after)
    assert valsets.digest(list(reversed(before))) == valsets.digest(before)  # a set, not a list
    diff = valsets.difference(before, after)
    assert diff == {"only_first": 1, "only_second": 0, "relabelled": 1, "first": 8, "second": 7}
    assert valsets.describe(diff) == "1 photo only in the first, 1 under another class"
    assert valsets.val_photos({"split": {}, "classes": ["a", "b"]}) is None  # an imported run: not here


def test_a_run_is_scored_on_another_runs_photos(before_after):
    runs, _ = before_after
    after = valsets.val_photos(load_run(runs["after"]))
    got = valsets.evaluate_on(runs["before"], after)
    assert got["photos"] == 7 and got["unreadable"] == 0 and 0.0 <= got["accuracy"] <= 1.0
    # A class the run never knew is a miss, whatever it predicts.
    strange = valsets.evaluate_on(runs["before"], [(p, "green") for p, _ in after])
    assert strange["accuracy"] == 0.0 and strange["photos"] == 7


def test_compare_says_the_sets_differ_and_scores_both_on_the_cleaned_one(app, before_after):
    runs, c = before_after
    at = app("pages/compare.py", state={S.SELECTED_RUNS: [runs["before"], runs["after"]]})
    assert not at.exception, at.exception
    assert any("2 different sets of photos" in w.value for w in at.warning)
    table = next(df.value for df in at.dataframe if "validation set" in df.value.columns)
    assert list(table["cleaning"]) == ["none", f"{c.title} (version 2: 1 excluded, 1 relabelled)"]
    assert list(table["validation set"]) == ["A (8 photos)", "B (7 photos)"]
    assert list(table["vs the reference set"]) == ["1 photo only in the first, 1 under another class", "the reference"]
    at.button(key="clean_compare_score").click().run()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "clean_compare_score"]  # scored: the button left
    table = next(df.value for df in at.dataframe if "validation set" in df.value.columns)
    after = valsets.val_photos(load_run(runs["after"]))
    expected = [round(100 * valsets.evaluate_on(runs[k], after)["accuracy"], 1) for k in ("before", "after")]
    assert list(table["acc on set B"]) == expected
    assert any("Set B is after's (trained on a cleaned dataset)" in x.value for x in at.caption)
