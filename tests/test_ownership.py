"""Two visitors on one server (AppTest sessions with different workspace keys): neither
sees, uses, exports, deletes nor stops the other's work; a run the operator publishes is
seen by everyone and still changed by its owner alone; bundles name no server path."""
from __future__ import annotations

import json
import zipfile

import pytest

from core import paths
from core.access import OPERATOR_VIEWER, AccessError, Viewer
from core.runs.store import delete_run, list_runs, set_published, visible_runs
from tests.conftest import OTHER_VISITOR, VISITOR, make_run, owner_of_key
from ui import state as S

A, B = owner_of_key(VISITOR), owner_of_key(OTHER_VISITOR)


def texts(els) -> str:
    return " ".join(str(e.value) for e in els)


@pytest.fixture
def a_run(tiny_split, isolated_dirs):
    return make_run(tiny_split, isolated_dirs / "runs", "alices-run")  # VISITOR's


def test_b_lists_none_of_as_runs_and_cannot_delete_or_export_them(app, a_run, isolated_dirs):
    at = app("pages/compare.py")
    assert not at.exception and at.session_state[S.SELECTED_RUNS] == [str(a_run)]
    other = app("pages/compare.py", {S.SESSION: OTHER_VISITOR})
    assert not other.exception
    assert "No finished runs yet" in texts(other.info) and not other.multiselect
    other.switch_page("pages/predict.py").run()
    assert not other.exception and "No trained run yet" in texts(other.info)
    # Even asked directly, the core refuses: a page cannot forget the rule.
    with pytest.raises(AccessError):
        delete_run(a_run, Viewer(B))
    assert a_run.is_dir()
    assert [r["name"] for r in visible_runs(isolated_dirs / "runs", Viewer(B))] == []


def test_a_published_run_is_seen_by_b_but_stays_as(app, a_run, isolated_dirs):
    set_published(a_run, True, OPERATOR_VIEWER)
    other = app("pages/compare.py", {S.SESSION: OTHER_VISITOR})
    assert not other.exception
    assert other.session_state[S.SELECTED_RUNS] == [str(a_run)]
    assert "shared with the class" in other.multiselect[0].format_func(str(a_run))
    assert "Exporting and deleting it are for its owner" in texts(other.caption)
    assert not any(b.label == "Delete" for b in other.button)
    assert not other.get("download_button") and not other.radio  # no export format to choose
    assert not other.get("imgs")  # a classmate's validation photos are not shown
    other.switch_page("pages/predict.py").run()
    assert not other.exception and other.session_state[S.PREDICT_RUN] == str(a_run)
    assert not any("Take this model away" in e.label for e in other.expander)
    # The owner still deletes it; only the operator publishes.
    with pytest.raises(Exception, match="only the operator"):
        set_published(a_run, False, Viewer(A))
    delete_run(a_run, Viewer(A))
    assert list_runs(isolated_dirs / "runs") == []


def test_b_cannot_stop_as_job(isolated_dirs):
    import threading
    from core.jobs.queue import TrainingQueue
    release = threading.Event()

    def runner(cfg, listeners, stop=None):
        release.wait(30)
        raise RuntimeError("not trained: a test")
    q = TrainingQueue(concurrency=1, device="cpu", runner=runner)
    job = q.submit(A, "alice's", [("run", object(), 10, 5)])
    with pytest.raises(AccessError):
        q.stop(job, Viewer(B))
    assert not job.stop_event.is_set()
    q.stop(job, OPERATOR_VIEWER)  # the operator may
    assert job.stop_event.is_set()
    release.set()


def test_own_classes_and_saved_setups_are_per_workspace(app, isolated_dirs):
    from core.data import own_dataset as own
    ds = own.create("Alice's insects", A)
    at = app("pages/data.py", {S.DATA_SOURCE: "own", S.OWN_DATASET: ds.id})
    assert not at.exception
    other = app("pages/data.py", {S.SESSION: OTHER_VISITOR, S.DATA_SOURCE: "own", S.OWN_DATASET: ds.id})
    assert not other.exception
    assert "Alice's insects" not in " ".join(texts(x) for x in (other.markdown, other.caption, other.selectbox))
    assert own.ready_path(ds.id, B) is None
    sessions = sorted(p.stem for p in (isolated_dirs / "data" / "sessions").glob("*.json"))
    assert sessions and set(sessions) <= {A, B}  # files named by owner ids, never by the keys in the addresses
    assert not any(VISITOR in p.read_text() or OTHER_VISITOR in p.read_text()
                   for p in (isolated_dirs / "data" / "sessions").glob("*.json"))


def test_a_saved_setup_cannot_point_at_anothers_upload(app, isolated_dirs, tiny_folders):
    """A setup naming a zip extraction or weights file outside the visitor's own uploads
    (a setup from before owners, or edited by hand) selects nothing."""
    foreign = paths.uploads_dir(A) / "zip-0000" / "tiny"
    foreign.parent.mkdir(parents=True)
    import shutil
    shutil.copytree(tiny_folders, foreign)
    path = isolated_dirs / "data" / "sessions" / f"{B}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({S.DATA_SOURCE: "zip", S.ZIP_PATH: str(foreign), S.ZIP_NAME: "a.zip",
                                S.WEIGHTS: "file", S.WEIGHTS_FILE: str(foreign / "red" / "r0.jpg")}))
    from streamlit.testing.v1 import AppTest
    from tests.conftest import ROOT
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    again.query_params["sid"] = OTHER_VISITOR
    again.switch_page("pages/data.py").run()
    assert not again.exception
    assert again.session_state[S.ZIP_PATH] is None and again.session_state[S.WEIGHTS_FILE] is None
    assert "Upload a .zip" in texts(again.info)


def test_a_bundle_names_no_server_path_and_no_owner(a_run, tmp_path):
    from core.runs.bundle import write_bundle
    bundle = write_bundle(a_run, tmp_path / "b.zip")
    with zipfile.ZipFile(bundle) as zf:
        blobs = {n: zf.read(n).decode("utf-8", "replace") for n in zf.namelist() if n.endswith(".json")}
    config = json.loads(blobs["alices-run/config.json"])
    assert "owner" not in config and config["data"] == "tinysplit"
    for name, text in blobs.items():
        assert str(tmp_path.parent) not in text and A not in text, name


def test_quota_refuses_an_upload_and_keeps_nothing(app, isolated_dirs, tiny_folders, monkeypatch):
    import io
    from core import disk
    monkeypatch.setattr(disk, "QUOTA_BYTES", 10_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(tiny_folders.rglob("*.jpg")):
            zf.write(p, p.relative_to(tiny_folders).as_posix())
    at = app("pages/data.py", {S.DATA_SOURCE: "zip"})
    at.file_uploader[0].set_value(("photos.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    assert "photos.zip" in texts(at.error) and "does not fit in your space on this server" in texts(at.error)
    assert at.session_state[S.ZIP_PATH] is None
    assert disk.counted(disk.usage(A)) == 0  # nothing kept: no zip, no half extraction
    monkeypatch.setattr(disk, "QUOTA_BYTES", 10 * 2**20)
    at.file_uploader[0].set_value(("photos2.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception and at.session_state[S.ZIP_PATH]
    kept = list(paths.uploads_dir(A).rglob("*"))
    assert not any(p.suffix == ".zip" for p in kept)  # extracted once, the archive not kept beside it


def test_the_operator_link_opens_the_class_page_and_a_wrong_one_does_not(app, a_run, isolated_dirs):
    from streamlit.testing.v1 import AppTest
    from tests.conftest import ROOT
    from ui import identity
    plain = app("pages/operator.py")
    assert not plain.exception and "for the operator" in texts(plain.error)

    def opened(link_secret):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.query_params["operator"] = link_secret
        return at.run()
    wrong = opened("a-guess")
    assert not wrong.exception and identity.OPERATOR_FLAG not in wrong.session_state
    assert "operator" not in wrong.query_params and "not valid" in wrong.session_state[identity.NOTE]
    op = opened(identity.operator_secret())
    assert op.session_state[identity.OPERATOR_FLAG] and "operator" not in op.query_params  # the secret leaves the URL
    op.switch_page("pages/operator.py").run()
    assert not op.exception, op.exception
    table = op.dataframe[0].value
    mine = table[table["best run"] == "alices-run"]  # (the queue is the process's: other tests' visitors appear too)
    assert mine["runs"].tolist() == [1] and mine["best val acc"].tolist()[0] > 0
    pub = next(m for m in op.multiselect if m.label.startswith("Shared with the class"))
    pub.set_value([str(a_run)]).run()
    assert not op.exception
    assert list_runs(isolated_dirs / "runs")[0]["published"]
    assert (isolated_dirs / "data" / "operator_secret").stat().st_mode & 0o077 == 0


class FakeUser(dict):
    is_logged_in = True


def test_a_login_is_the_workspace_and_never_goes_into_the_address(monkeypatch, isolated_dirs):
    """With the operator's OIDC login, the account is the workspace (on any device) and an
    operator account is the operator; the login's key is never put in a URL (``oidc:…``
    is not a key any address can name)."""
    import streamlit as st
    from core.access import owner_id
    from streamlit.testing.v1 import AppTest
    from tests.conftest import ROOT
    from ui import identity
    monkeypatch.setattr(st, "user", FakeUser(sub="42", email="teacher@school.org"))
    monkeypatch.setattr(identity, "_setting", lambda name, default=None: ["teacher@school.org"]
                        if name == "operators" else default)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["sid"] = VISITOR  # ignored: the login decides
    at.run()
    assert not at.exception
    assert at.session_state[S.SESSION] == "oidc:42" and at.session_state[identity.OPERATOR_FLAG]
    assert at.query_params.get("sid") == VISITOR  # left as it was, not replaced by the login's key
    assert identity.resolve("oidc:42")[0] != "oidc:42"  # an address naming a login's key gets a new workspace
    assert owner_id("oidc:42") != owner_id(VISITOR)


def test_a_nearly_full_disk_refuses_uploads_whatever_the_quota(isolated_dirs, monkeypatch):
    """Workspaces are free to make: the disk's free space is the last bound."""
    from core import disk
    monkeypatch.setattr(disk, "MIN_FREE_BYTES", 1 << 62)
    with pytest.raises(disk.QuotaError, match="nearly full"):
        disk.require_room(A, 10, "photo.jpg")
    monkeypatch.setattr(disk, "MIN_FREE_BYTES", 0)
    assert disk.require_room(A, 10, "photo.jpg") > 0
