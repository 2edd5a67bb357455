"""The whole flow through the widgets, across pages: what a user chose on Data and Model
is what the run started on Train actually used, after visits to other pages and after a
refresh (a new session of the same tab id).  The bugs of a page-by-page app live here."""
import pytest
from pathlib import Path

from core.runs.store import list_runs
from tests.conftest import ROOT, wait_for_jobs
from ui import state as S


def _fresh(sid=None):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    if sid:
        at.query_params["sid"] = sid  # a refresh: same URL, new session
    return at


def test_choices_survive_pages_and_a_refresh_and_are_what_the_run_used(tiny_folders, isolated_dirs):
    at = _fresh().run()
    # Data: a folder on the server, a different split.
    at.radio(key="_w.data_source").set_value("folder").run()
    at.selectbox(key="_w.folder_path").set_value(str(tiny_folders.resolve())).run()
    at.slider(key="_w.val_split").set_value(0.3).run()
    assert not at.exception and "14 training and 6 validation" in at.success[0].value

    # Model: another architecture, random init, a hidden layer, freeze the first 3 stages.
    at.switch_page("pages/model.py").run()
    at.selectbox(key="_w.arch").set_value("mobilenet_v3_small").run()
    at.radio(key="_w.weights").set_value("none").run()
    at.number_input(key="_w.hidden").set_value(128).run()
    at.radio(key="_freeze_mode").set_value("first").run()
    at.slider(key="_w.freeze").set_value(3).run()
    assert not at.exception and at.session_state[S.FREEZE] == 3

    # A visit to Data (whose widgets differ) must not reset the Model page's choices.
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/model.py").run()
    assert at.selectbox(key="_w.arch").value == "mobilenet_v3_small"
    assert at.number_input(key="_w.hidden").value == 128 and at.slider(key="_w.freeze").value == 3

    # Train: hyperparameters, then a refresh before pressing Start.
    at.switch_page("pages/train.py").run()
    at.number_input(key="_w.train_cfg.epochs").set_value(2).run()
    at.number_input(key="_w.train_cfg.batch_size").set_value(4).run()
    at.selectbox(key="_w.train_cfg.optimizer").set_value("adam").run()
    sid = at.session_state[S.SESSION]

    at = _fresh(sid)
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.session_state[S.ARCH] == "mobilenet_v3_small" and at.session_state[S.HIDDEN] == 128
    assert at.number_input(key="_w.train_cfg.epochs").value == 2
    # (The sidebar shows the same labels; AppTest drops sidebar elements on reruns under
    # st.navigation, so the browser test checks the sidebar.)
    assert (f"Model: **mobilenet_v3_small · random init · freeze first 3 stages · head 128 hidden** · data: **{tiny_folders.name}**"
            in " ".join(c.value for c in at.caption))
    next(b for b in at.button if b.label == "Start").click().run()
    wait_for_jobs(sid)

    # Compare and Predict show the run; its saved config is exactly the choices above.
    at.switch_page("pages/compare.py").run()
    assert not at.exception and at.dataframe[0].value["architecture"].tolist() == ["mobilenet_v3_small"]
    at.switch_page("pages/predict.py").run()
    assert not at.exception and "Classes: blue, red" in " ".join(c.value for c in at.caption)
    (run,) = list_runs(isolated_dirs / "runs")
    c = run["config"]
    assert (c["arch"], c["weights"], c["freeze"], c["hidden"]) == ("mobilenet_v3_small", "none", 3, 128)
    assert (c["train"]["epochs"], c["train"]["batch_size"], c["train"]["optimizer"]) == (2, 4, "adam")
    assert Path(c["data"]) == tiny_folders and c["val_split"] == 0.3
    assert run["summary"]["epochs"] == 2 and run["summary"]["num_train"] == 14

    # A second run trained after those visits: Compare adds it to the selection, first, and
    # Predict switches to it (they used to stay on what they showed first).
    at.switch_page("pages/train.py").run()
    at.number_input(key="_w.train_cfg.epochs").set_value(1).run()
    next(b for b in at.button if b.label == "Start").click().run()
    wait_for_jobs(sid)
    second = next(r["dir"] for r in list_runs(isolated_dirs / "runs") if r["dir"] != run["dir"])
    at.switch_page("pages/compare.py").run()
    assert not at.exception and at.session_state[S.SELECTED_RUNS][:2] == [second, run["dir"]]
    assert sorted(at.dataframe[0].value["epochs"].tolist()) == [1, 2]
    at.switch_page("pages/predict.py").run()
    assert not at.exception and at.session_state[S.PREDICT_RUN] == second


@pytest.mark.parametrize("sid", ["../../etc/passwd", "0123456789ab", "A" * 21, "A" * 23, "bad key with spaces!!!"])
def test_a_bad_sid_in_the_url_gets_a_new_workspace_and_says_so(isolated_dirs, sid):
    """Only a 128-bit key names a workspace: a short, guessable id (the 12 hex digits of
    before) or anything else starts a new one, with a visible note."""
    from ui import identity
    at = _fresh(sid).run()
    assert not at.exception
    key = at.session_state[S.SESSION]
    assert key != sid and identity.KEY.match(key) and at.query_params["sid"] == key
    assert "new, empty one was started" in at.session_state[identity.NOTE]
    assert any("new, empty one was started" in w.value for w in at.sidebar.warning)


def test_a_good_sid_is_the_same_workspace_without_a_note(isolated_dirs):
    from ui import identity
    first = _fresh().run()
    key = first.session_state[S.SESSION]
    assert identity.KEY.match(key) and len(key) == 22  # token_urlsafe(16): 128 bits
    again = _fresh(key).run()
    assert again.session_state[S.SESSION] == key and identity.NOTE not in again.session_state
