"""A queue that loses nothing: jobs are recorded in SQLite as they are submitted, start,
finish a run and end; a queue started on the same database after a crash puts the
waiting and the interrupted jobs back in line, in order, and runs them to the end.

The fast tests play the crash in one process (the first queue's worker is left blocked,
as a killed server's would never return); the slow one kills a real ``streamlit run``
with SIGKILL in the middle of a run, restarts it and waits for both jobs."""
from __future__ import annotations

import threading
import time

import pytest

from core.jobs.db import JobStore
from core.jobs.queue import TrainingQueue
from core.training.experiment import ExperimentConfig
from core.training.trainer import TrainConfig


class Result:
    def __init__(self):
        self.best_val_acc, self.history, self.stopped, self.stop_phase = 0.9, [{"epoch": 1}], False, ""
        self.path, self.best_epoch, self.prep_seconds, self.feature_hits = "plain", 1, 0.0, 0


def cfg(name):
    return ExperimentConfig(data="/nowhere", name=name, owner="a" * 32, train=TrainConfig(epochs=1))


def wait(cond, timeout=20):
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "timed out"
        time.sleep(0.02)


def test_a_restart_runs_the_interrupted_and_the_waiting_jobs_in_order(tmp_path):
    db = tmp_path / "queue.sqlite3"
    started, never = threading.Event(), threading.Event()

    def hangs(config, listeners, stop=None):  # the killed server: this call never returns
        started.set()
        never.wait()
    first = TrainingQueue(concurrency=1, device="cpu", runner=hangs, store=JobStore(db))
    running = first.submit("a" * 32, "two runs", [("one", cfg("one"), 10, 5), ("two", cfg("two"), 10, 5)])
    waiting = first.submit("b" * 32, "waiting", [("three", cfg("three"), 10, 5)])
    stopped = first.submit("b" * 32, "stopped while waiting", [("four", cfg("four"), 10, 5)])
    first.stop(stopped)
    started.wait(10)

    ran = []

    def quick(config, listeners, stop=None):
        ran.append(config.name)
        return tmp_path / config.name, Result(), 0.1
    second = TrainingQueue(concurrency=1, device="cpu", runner=quick, store=JobStore(db))
    again = second.jobs[running.id]
    assert again.note.startswith("resumed after a server restart") and "one restarted" in again.note
    assert second.jobs[stopped.id].status == "stopped"  # ended before the crash: kept as it ended, not rerun
    wait(lambda: not any(j.active for j in second.jobs.values()))
    assert ran == ["one", "two", "three"]  # in their order, the interrupted run from its start
    assert [r.status for r in again.runs] == ["done", "done"] and second.jobs[waiting.id].status == "done"
    assert again.owner == "a" * 32 and again.runs[0].config.owner == "a" * 32  # the owner survives too
    # A third start finds nothing to do: done jobs are shown, never run twice.
    third = TrainingQueue(concurrency=1, device="cpu", runner=quick, store=JobStore(db))
    time.sleep(0.3)
    assert ran == ["one", "two", "three"] and third.jobs[running.id].status == "done"
    never.set()


def test_a_run_finished_before_the_crash_is_not_run_again(tmp_path):
    db = tmp_path / "queue.sqlite3"
    calls, second_started, never = [], threading.Event(), threading.Event()

    def first_runner(config, listeners, stop=None):
        calls.append(config.name)
        if config.name == "two":
            second_started.set()
            never.wait()
        return tmp_path / config.name, Result(), 0.1
    q = TrainingQueue(concurrency=1, device="cpu", runner=first_runner, store=JobStore(db))
    job = q.submit("a" * 32, "two runs", [("one", cfg("one"), 10, 5), ("two", cfg("two"), 10, 5)])
    second_started.wait(10)
    rerun = []

    def quick(config, listeners, stop=None):
        rerun.append(config.name)
        return tmp_path / config.name, Result(), 0.1
    restored = TrainingQueue(concurrency=1, device="cpu", runner=quick, store=JobStore(db))
    wait(lambda: not restored.jobs[job.id].active)
    assert rerun == ["two"] and restored.jobs[job.id].runs[0].run_dir == str(tmp_path / "one")
    never.set()


def test_a_stop_pressed_before_the_crash_is_kept(tmp_path):
    db = tmp_path / "queue.sqlite3"
    started, never = threading.Event(), threading.Event()

    def hangs(config, listeners, stop=None):
        started.set()
        never.wait()
    q = TrainingQueue(concurrency=1, device="cpu", runner=hangs, store=JobStore(db))
    job = q.submit("a" * 32, "stop me", [("one", cfg("one"), 10, 5)])
    started.wait(10)
    q.stop(job)  # the stop is recorded; the server dies before the run notices
    ran = []
    restored = TrainingQueue(concurrency=1, device="cpu", runner=lambda c, l, stop=None: ran.append(c), store=JobStore(db))
    wait(lambda: not restored.jobs[job.id].active)
    assert ran == [] and restored.jobs[job.id].status == "stopped"
    never.set()


def test_a_damaged_row_is_skipped_not_fatal(tmp_path):
    import sqlite3
    db = tmp_path / "queue.sqlite3"
    JobStore(db).add("x1", "a" * 32, "train", "bad", time.time(), {"runs": [{"label": "r"}]}, [])
    con = sqlite3.connect(db)
    con.execute("INSERT INTO jobs (id, owner, kind, title, status, created, spec) VALUES ('x2','o','train','t','queued',0,'{not json')")
    con.commit()
    q = TrainingQueue(concurrency=1, device="cpu", runner=lambda *a, **k: None, store=JobStore(db))
    assert "x1" not in q.jobs and "x2" not in q.jobs


@pytest.mark.slow
def test_a_sigkilled_streamlit_server_finishes_the_running_and_the_queued_job(tmp_path, ants_bees, mobilenet_file):
    """Two students press Start; the server is killed (SIGKILL) while the first job trains
    and the second waits; started again, with no browser open, it finishes both, leaves no
    partial run, and the first student's page says the job was resumed."""
    import os
    import signal
    import sqlite3
    from core.runs.store import list_runs, write_json
    from tests.conftest import owner_of_key
    from tests.test_browser_e2e import CHROMIUM, start_server, stop_server
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from playwright.sync_api import expect, sync_playwright
    from ui import state as S
    keys = {"a": "Restart-student-A-00000", "b": "Restart-student-B-00000"}
    keys = {k: v[:22] for k, v in keys.items()}
    sessions = tmp_path / "data" / "sessions"
    sessions.mkdir(parents=True)
    # A fine-tunes the whole network for an epoch (about 20 s here); B trains the frozen default.
    train = {**S.SETUP_DEFAULTS[S.TRAIN_CFG], "epochs": 1, "schedule": "standard"}
    write_json(sessions / f"{owner_of_key(keys['a'])}.json", {S.FREEZE: "none", S.TRAIN_CFG: train})
    write_json(sessions / f"{owner_of_key(keys['b'])}.json", {S.TRAIN_CFG: {**train, "epochs": 2}})
    db = tmp_path / "data" / "queue.sqlite3"

    def rows():
        if not db.exists():
            return []
        con = sqlite3.connect(db)
        try:
            return con.execute("SELECT owner, status, note FROM jobs ORDER BY seq").fetchall()
        finally:
            con.close()

    proc, url = start_server(tmp_path)
    killed = False
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                        "--disable-background-networking", "--no-first-run"])
            for who in ("a", "b"):
                page = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
                page.goto(f"{url}/train?sid={keys[who]}")
                button = page.get_by_role("button", name="Start")
                expect(button).to_be_enabled(timeout=120_000)
                button.click()
                expect(button).to_be_disabled(timeout=60_000)  # submitted: recorded before the page reran
            browser.close()
        end = time.time() + 240
        while not (len(rows()) == 2 and rows()[0][1] == "running" and rows()[1][1] == "queued"):
            assert time.time() < end, rows()
            time.sleep(0.5)
        time.sleep(4)  # into A's run: reading the photos or its first epoch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed = True
        assert [r[1] for r in rows()] == ["running", "queued"]
    finally:
        if not killed:
            stop_server(proc)

    proc, url = start_server(tmp_path)  # the same runs and data folders: a restart
    try:
        end = time.time() + 600
        while [r[1] for r in rows()] != ["done", "done"]:
            assert time.time() < end, rows()
            assert not any(r[1] == "error" for r in rows()), rows()
            time.sleep(1)
        assert rows()[0][2].startswith("resumed after a server restart")
        runs = list_runs(tmp_path / "runs")
        assert sorted(r["owner"] for r in runs) == sorted(owner_of_key(k) for k in keys.values())
        assert all(r["summary"]["epochs"] == r["summary"]["epochs_planned"] for r in runs)
        assert not any((tmp_path / "runs" / ".partial").iterdir())  # the killed run's folder was removed
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                        "--disable-background-networking", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{url}/train?sid={keys['a']}")
            expect(page.get_by_text("Resumed after a server restart")).to_be_visible(timeout=120_000)
            browser.close()
    finally:
        stop_server(proc)
