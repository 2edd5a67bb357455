"""Compare page (AppTest): table, confusion matrix, gallery, delete."""
from tests.conftest import make_run


def test_no_runs_says_what_to_do(app):
    at = app("pages/compare.py")
    assert not at.exception and "No finished runs yet" in at.info[0].value


def test_compare_two_runs_and_delete_one(app, tiny_split, isolated_dirs):
    make_run(tiny_split, isolated_dirs / "runs", "first")
    make_run(tiny_split, isolated_dirs / "runs", "second", epochs=2)
    at = app("pages/compare.py")
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["first", "second"] and sorted(table["epochs"]) == [1, 2]
    assert len(at.get("plotly_chart")) >= 3  # curves, confusion matrix, per-class accuracy
    assert "Validation accuracy of the saved weights" in " ".join(c.value for c in at.caption)
    assert len(at.image) >= 1
    focus = at.selectbox[0].value
    next(b for b in at.button if b.label == "Delete").click().run()
    assert not at.exception
    from core.runs.store import list_runs
    left = [r["dir"] for r in list_runs(isolated_dirs / "runs")]
    assert focus not in left and len(left) == 1


def test_the_closer_look_survives_a_visit_to_predict_and_stopped_runs_say_so(app, tiny_split, isolated_dirs):
    import json
    from pathlib import Path
    first = make_run(tiny_split, isolated_dirs / "runs", "first")
    second = make_run(tiny_split, isolated_dirs / "runs", "second", epochs=2)
    summary = Path(second, "summary.json")  # as a Stop after one of two epochs leaves it
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "stopped": True, "epochs": 1}))
    at = app("pages/compare.py")
    box = at.selectbox(key="_w.compare_focus")
    assert "stopped after 1 of 2 epochs" in box.format_func(str(second)) and "stopped" not in box.format_func(str(first))
    box.set_value(str(first)).run()
    at.switch_page("pages/predict.py").run()
    assert not at.exception
    at.switch_page("pages/compare.py").run()
    assert at.selectbox(key="_w.compare_focus").value == str(first)
