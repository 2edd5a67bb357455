"""Train page (AppTest): a background run with live curves, and transfer vs scratch."""
from core.runs.store import list_runs
from core.training.schedules import FINE_TUNE_RECIPE
from tests.conftest import wait_for_jobs
from ui import state as S


def number(at, label):
    return next(n for n in at.number_input if n.label == label)


def tiny_state(path):
    return {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(path), S.ARCH: "mobilenet_v3_small", S.WEIGHTS: "none",
            S.FREEZE: "none"}


def test_no_dataset_links_to_data_page(app, monkeypatch):
    at = app("pages/train.py", {S.DATA_SOURCE: "folder", S.FOLDER_PATH: None})
    assert not at.exception
    assert "No dataset is selected" in at.info[0].value
    assert any("Data" in str(link.label) for link in at.get("page_link"))


def test_start_trains_in_background_and_saves_a_run(app, tiny_folders, isolated_dirs):
    at = app("pages/train.py", tiny_state(tiny_folders))
    number(at, "Epochs").set_value(2)
    number(at, "Batch size").set_value(8)
    next(b for b in at.button if "Start" in b.label).click().run()
    assert not at.exception
    wait_for_jobs(at.session_state[S.SESSION])
    at.run()
    assert not at.exception
    assert any("best val accuracy" in s.value for s in at.success)
    runs = list_runs(isolated_dirs / "runs")
    assert len(runs) == 1 and runs[0]["summary"]["epochs"] == 2
    assert runs[0]["config"]["arch"] == "mobilenet_v3_small"
    assert not any("the Data page now selects" in c.value for c in at.caption)
    # The Data page moves on: the panel still shows this tab's last job, and says it used other data.
    other = isolated_dirs / "other"
    for cls in ("a", "b"):
        (other / cls).mkdir(parents=True)
        for f in sorted((tiny_folders / ("red" if cls == "a" else "blue")).iterdir()):
            (other / cls / f.name).write_bytes(f.read_bytes())
    at.session_state[S.FOLDER_PATH] = str(other)
    at.run()
    assert any("the Data page now selects" in c.value for c in at.caption)


def test_transfer_vs_scratch_runs_three(app, tiny_folders, isolated_dirs, mobilenet_file):
    at = app("pages/train.py", {**tiny_state(tiny_folders), S.ARCH: "mobilenet_v2", S.WEIGHTS: "imagenet"})
    number(at, "Epochs").set_value(1)
    number(at, "Batch size").set_value(8)
    tab = at.session_state[S.TRAIN_CFG]
    next(b for b in at.button if "Transfer vs scratch" in b.label).click().run()
    wait_for_jobs(at.session_state[S.SESSION])
    at.run()
    assert not at.exception
    done = [s.value for s in at.success]
    assert len(done) == 3 and {"pretrained, frozen", "pretrained, fine-tuned", "from scratch"} == {d.split(":")[0] for d in done}
    runs = list_runs(isolated_dirs / "runs")
    assert sorted(r["config"]["weights"] for r in runs) == ["imagenet", "imagenet", "none"]
    assert len({r["config"]["train"]["seed"] for r in runs}) == 1
    # The fine-tuned run takes fastai's recipe; the frozen one the tab's settings; scratch the standard
    # schedule, at its own (the tutorial's) rate where the user typed none.
    by = {r["name"].split("-")[1]: r["config"]["train"] for r in runs}
    assert {k: by["finetune"][k] for k in FINE_TUNE_RECIPE} == FINE_TUNE_RECIPE
    assert by["frozen"]["optimizer"] == tab["optimizer"] and by["frozen"]["schedule"] == tab["schedule"]
    assert by["scratch"]["schedule"] == "standard" and by["scratch"]["lr"] == 0.001 != tab["lr"]
    assert f"{FINE_TUNE_RECIPE['freeze_epochs']} head-only epoch" in " ".join(c.value for c in at.caption)


def test_the_curves_mark_where_the_body_was_unfrozen():
    # The walk: after fine_tune's head-only epoch nothing on the curves said the body now trained.
    from ui.common import curves_figure, unfreeze_marks

    def rec(epoch, phase):
        return {"epoch": epoch, "phase": phase, "train_loss": 0.5, "val_loss": 0.4, "train_acc": 0.8, "val_acc": 0.9}
    tuned = [rec(1, "frozen"), rec(2, "unfrozen"), rec(3, "unfrozen")]
    frozen = [rec(e, "train") for e in (1, 2, 3)]
    gradual = [rec(1, "frozen"), rec(2, "unfreeze 1/7"), rec(3, "unfreeze 2/7")]
    assert unfreeze_marks([("a", tuned), ("b", frozen)]) == [1.5]
    assert unfreeze_marks([("b", frozen)]) == [] and unfreeze_marks([("g", gradual), ("a", tuned)]) == [1.5]
    fig = curves_figure([("a", tuned), ("b", frozen)])
    assert [s.x0 for s in fig.layout.shapes] == [1.5, 1.5]  # on both panels
    assert [a.text for a in fig.layout.annotations if a.text == "body unfrozen"]
