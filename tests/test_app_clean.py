"""The Clean page as a visitor uses it, on the noisy ants/bees (``tests/noisy_data.py``)
offered as a server folder: the audit from cached features, review (bulk and per photo),
undo, progress kept in the setup, one-click retrain on the cleaned dataset; the Data page
offers it; another visitor sees none of it."""
import hashlib
import json
import shutil

import pytest

from core.access import Viewer
from core.audit import cleaned
from tests.conftest import OTHER_VISITOR, VISITOR, owner_of_key, wait_for_jobs
from ui import state as S
from ui.clean_gallery import widget_key

A = Viewer(owner_of_key(VISITOR))


def digests(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def noisy_offered(audited, isolated_dirs, monkeypatch):  # noqa: F811
    """The noisy copy as an offered server folder, its audit's features in the data folder's cache."""
    planted, report, *_ = audited
    data_dir = audited[4]
    monkeypatch.setenv("TRANSFERLAB_DATASET_ROOTS", str(planted.root.parent))
    shutil.copytree(data_dir / "features", isolated_dirs / "data" / "features")
    return planted, report


def setup_state(planted, epochs=1) -> dict:
    return {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(planted.root.resolve()),
            S.TRAIN_CFG: {**S.SETUP_DEFAULTS[S.TRAIN_CFG], "epochs": epochs}}


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_review_clean_and_retrain(app, noisy_offered, isolated_dirs):
    planted, report = noisy_offered
    before = digests(planted.root)
    at = app("pages/clean.py", state=setup_state(planted))
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "clean_audit"]  # cached: audited at once, no button
    assert (metric(at, "Label issues"), metric(at, "Train/val leaks"), metric(at, "Outliers")) == \
        (str(len(report.label_issues)), "5", str(len(report.outliers)))
    assert "Your first decision makes a cleaned dataset" in at.markdown[0].value
    assert cleaned.list_cleaned(A) == []

    # Bulk: the val copy of every leak, one undo step, and the pairs show it as decided.
    at.button(key="_clean_bulk_leaks").click().run()
    assert not at.exception, at.exception
    (c,) = cleaned.list_cleaned(A)
    assert sorted(c.exclude) == sorted(cleaned.rel_path(planted.root.resolve(), v) for _, v in planted.leaks)
    assert at.session_state[S.CLEANED] == c.id
    leak_controls = [s for s in at.segmented_control if "drop val copy" in s.options]
    assert len(leak_controls) == 5 and all(s.value == "drop val copy" for s in leak_controls)
    total = len({r["path"] for r in report.label_issues + report.outliers} | {r["other"] for r in report.leaks})
    assert f"Reviewed 5 of {total}" in at.progress[0].text

    # Per photo: relabel the least confident label issue to its suggestion, keep the second.
    first, second = report.label_issues[0], report.label_issues[1]
    rel1, rel2 = (cleaned.rel_path(planted.root.resolve(), r["path"]) for r in (first, second))
    control = at.segmented_control(key=widget_key(f"label|{rel1}"))
    control.set_value(control.options[0]).run()
    at.segmented_control(key=widget_key(f"label|{rel2}")).set_value("keep").run()
    assert not at.exception, at.exception
    c = cleaned.load(c.id, A)
    assert c.relabel == {rel1: first["suggested"]} and at.session_state[S.CLEAN_REVIEWED] == {c.id: [rel2]}
    assert f"Reviewed 7 of {total}" in at.progress[0].text
    # The setup on disk keeps the progress (a refresh brings it back).
    saved = json.loads(next((isolated_dirs / "data" / "sessions").glob("*.json")).read_text())
    assert saved[S.CLEAN_REVIEWED] == {c.id: [rel2]}

    # Undo the relabel: the control shows no decision again.
    undo = at.button(key="clean_undo")
    assert undo.label == f"Undo: relabelled {rel1} to {first['suggested']}"
    undo.click().run()
    assert cleaned.load(c.id, A).relabel == {}
    assert at.segmented_control(key=widget_key(f"label|{rel1}")).value is None
    assert at.segmented_control(key=widget_key(f"label|{rel2}")).value == "keep"

    # One click: the cleaned dataset is selected and trained on (the comparison run left out to save time).
    at.checkbox(key="clean_both").uncheck().run()
    at.button(key="clean_retrain").click().run()
    assert not at.exception, at.exception
    assert at.session_state[S.DATA_SOURCE] == "cleaned"
    wait_for_jobs(VISITOR, timeout=600)
    (run_dir,) = [p for p in (isolated_dirs / "runs").iterdir() if not p.name.startswith(".")]
    config = json.loads((run_dir / "config.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert config["cleaning"] == c.id and config["cleaned"]["excluded"] == 5 and config["cleaned"]["relabelled"] == 0
    assert len(split["val"]) == 153 and len(split["train"]) == 248
    assert digests(planted.root) == before  # the source, byte for byte

    # The Data page offers it under "Cleaned" and trains on it; the sidebar names it.
    at = app("pages/data.py", state={S.DATA_SOURCE: "cleaned", S.CLEANED: c.id})
    assert not at.exception, at.exception
    assert at.selectbox(key="_w." + S.CLEANED).value == c.id
    assert any("5 photos excluded" in x.value for x in at.caption)
    assert any("153 validation images" in s.value for s in at.success)


def test_another_visitor_sees_nothing_of_it(app, noisy_offered):
    planted, _ = noisy_offered
    source = cleaned.make_source("folder", str(planted.root), "noisy", 0.2, 0, A.owner)
    mine = cleaned.create(source, A)
    cleaned.exclude(mine.id, A, ["val/ants/" + sorted(p.name for p in (planted.root / "val/ants").iterdir())[0]])
    # B with A's id in a (forged) setup: nothing selected, nothing listed, nothing changed.
    at = app("pages/data.py", state={S.SESSION: OTHER_VISITOR, S.DATA_SOURCE: "cleaned", S.CLEANED: mine.id})
    assert not at.exception, at.exception
    assert any("no cleaned dataset yet" in i.value for i in at.info)
    at = app("pages/clean.py", state={S.SESSION: OTHER_VISITOR, S.DATA_SOURCE: "cleaned", S.CLEANED: mine.id})
    assert not at.exception, at.exception
    assert any(f"no cleaned dataset with id '{mine.id}'" in i.value for i in at.info)
    assert not at.segmented_control and cleaned.load(mine.id, A).version == 1
