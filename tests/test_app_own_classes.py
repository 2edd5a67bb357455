"""Make your own classes on the Data page (AppTest): real ants/bees photos uploaded per
class with one broken file among them, a rename, a removed photo and a camera shot;
then train and predict on it, and find it again after a restart."""
from pathlib import Path

import streamlit as st

from core.runs.store import list_runs, read_json
from tests.conftest import ROOT, wait_for_jobs
from ui import state as S


def _fresh(sid=None):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    if sid:
        at.query_params["sid"] = sid  # a refresh, or a later visit with the bookmarked URL
    return at


def texts(els) -> str:
    return " ".join(e.value for e in els).replace("\\", "")  # user text is markdown-escaped on the page


def button(at, label):
    return next(b for b in at.button if b.label == label)


def uploader(at, label):
    return next(u for u in at.file_uploader if u.label.replace("\\", "") == label)


def files(folder: Path, n: int):
    return [(p.name, p.read_bytes(), "image/jpeg") for p in sorted(folder.iterdir())[:n]]


def test_own_classes_from_real_photos_train_predict_and_survive_a_restart(ants_bees, mobilenet_file, isolated_dirs):
    at = _fresh().run()
    at.radio(key="_w.data_source").set_value("own").run()
    assert not at.exception and "press **Create dataset**" in texts(at.info)
    at.text_input(key="_own.title").input("Insects 🐜")
    button(at, "Create dataset").click().run()
    for name in ("ants", "bees"):
        at.text_input(key="_own.new_class").input(name)
        button(at, "Add class").click().run()
    assert not at.exception and "class 'ants' needs 5 more photos" in texts(at.warning)
    assert at.text_input(key="_own.new_class").value == ""  # the field is cleared for the next class

    # Six ants and a broken file: the broken one is refused with the reason, the rest added.
    broken = (ants_bees / "train/ants").iterdir().__next__().read_bytes()[:2000]
    uploader(at, "Add photos to ants").set_value(files(ants_bees / "train/ants", 6) + [("broken.jpg", broken, "image/jpeg")]).run()
    assert not at.exception
    assert "Added 6 photos to **ants**" in texts(at.success)
    assert "Refused **broken.jpg**: truncated or damaged image data" in texts(at.error)
    assert "class 'bees' needs 5 more photos" in texts(at.warning) and "ants" not in texts(at.warning)

    # Bees: four photos, the same ones again (skipped as duplicates), then a camera shot.
    bees = files(ants_bees / "train/bees", 5)
    uploader(at, "Add photos to bees").set_value(bees[:4]).run()
    uploader(at, "Add photos to bees").set_value(bees[:2]).run()
    assert "already in this class" in texts(at.info) and "class 'bees' needs 1 more photo" in texts(at.warning)
    at.toggle(key="_own.camera").set_value(True).run()
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "Shots go to class")).set_value("bees").run()
    at.camera_input[0].set_value(("shot.jpg", bees[4][1], "image/jpeg")).run()
    assert not at.exception and "Added 1 photo to **bees**" in texts(at.success)

    # Rename a class into another script; remove one photo (6 ants -> 5, still enough).
    assert any(e.label.replace("\\", "") == "Rename or remove ants" for e in at.expander)
    at.text_input(key=next(t.key for t in at.text_input if t.label.replace("\\", "") == "New name for ants")).input("蚂蚁")
    next(b for b in at.button if b.key and b.key.endswith(".ants.go")).click().run()
    assert not at.exception and "is now **蚂蚁**" in texts(at.success)
    next(b for b in at.button if b.label == "Remove" and ".蚂蚁." in b.key).click().run()
    assert not at.exception and not at.warning
    # Ready: the page's summary is this dataset's, and it is the selected one.
    assert "2 classes" in texts(at.success) and "8 training and 2 validation" in texts(at.success)
    assert len(at.image) >= 10  # thumbnails (5 + 5) and the augmented samples
    sid = at.session_state[S.SESSION]
    dataset_id = at.session_state[S.OWN_DATASET]

    # Train on it (the demo's pretrained MobileNetV2, frozen: seconds) and predict a bee.
    at.switch_page("pages/train.py").run()
    assert "data: **Insects 🐜** (2 classes)" in texts(at.caption)
    at.number_input(key="_w.train_cfg.epochs").set_value(2).run()
    button(at, "Start").click().run()
    wait_for_jobs(sid)
    at.switch_page("pages/predict.py").run()
    assert not at.exception and "Classes: bees, 蚂蚁" in texts(at.caption)
    bee = sorted((ants_bees / "val/bees").iterdir())[0]
    at.file_uploader[0].set_value((bee.name, bee.read_bytes(), "image/jpeg")).run()
    assert not at.exception and any(m.value.startswith("### ") for m in at.markdown)
    (run,) = list_runs(isolated_dirs / "runs")
    assert Path(run["config"]["data"]).name == dataset_id and read_json(Path(run["dir"]) / "classes.json") == ["bees", "蚂蚁"]
    assert run["summary"]["num_train"] == 8 and run["summary"]["num_val"] == 2

    # A restart: nothing in memory, the same URL brings the dataset back, selected and ready.
    st.cache_data.clear()
    at = _fresh(sid).run()
    assert not at.exception and at.session_state[S.DATA_SOURCE] == "own"
    assert at.session_state[S.OWN_DATASET] == dataset_id and "8 training and 2 validation" in texts(at.success)
    mine = at.selectbox(key="_w.own_dataset")
    assert mine.value == dataset_id and mine.options == ["Insects 🐜 — 2 classes, 10 photos"]
    # Another tab (another id) has its own, empty list.
    other = _fresh().run()
    other.radio(key="_w.data_source").set_value("own").run()
    assert not other.exception and not [s for s in other.selectbox if s.label == "Your datasets"]


def test_bad_class_names_are_explained_on_the_page(isolated_dirs):
    at = _fresh().run()
    at.radio(key="_w.data_source").set_value("own").run()
    at.text_input(key="_own.title").input("x")
    button(at, "Create dataset").click().run()
    for bad, why in (("../../etc", "contains a slash"), ("..", "is reserved"), ("   ", "class name is empty")):
        at.text_input(key="_own.new_class").input(bad)
        button(at, "Add class").click().run()
        assert not at.exception and why in texts(at.error)
    at.text_input(key="_own.new_class").input("ankle boot")
    button(at, "Add class").click().run()
    at.text_input(key="_own.new_class").input("Ankle Boot")
    button(at, "Add class").click().run()
    assert "already a class named 'Ankle Boot'" in texts(at.error)
    assert "add at least 2 classes (it has 1: 'ankle boot')" in texts(at.warning)
    assert S.OWN_DATASET in at.session_state and not at.success  # not ready: no summary, nothing selected
