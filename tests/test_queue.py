"""The server-wide training queue: many tabs at once, failures that stay contained, a
stop that works in every phase, estimates that cover the whole job."""
import threading
import time
from pathlib import Path

import pytest

from core.training.experiment import ExperimentConfig, run_experiment
from core.jobs.queue import TrainingQueue
from core.runs.store import PARTIAL, list_runs
from core.training.trainer import TrainConfig


def _cfg(data, runs_name, **kw):
    train = TrainConfig(**{"epochs": 3, "batch_size": 8, **kw.pop("train", {})})
    return ExperimentConfig(data=str(data), name=runs_name, train=train, **kw)


def _wait(job, timeout=300):
    end = time.time() + timeout
    while job.active:
        assert time.time() < end, f"job still {job.status}"
        time.sleep(0.05)


def _wait_for(cond, timeout=120):
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "condition never met"
        time.sleep(0.02)


def test_two_tabs_start_at_once_on_real_photos(ants_bees, mobilenet_file, isolated_dirs):
    """The classroom case: two owners press Start together; both finish with the accuracy
    of a run alone, one after the other, and the second reuses the first's features."""
    q = TrainingQueue(concurrency=1)
    jobs = []
    barrier = threading.Barrier(2)

    def press(owner):
        barrier.wait()
        jobs.append(q.submit(owner, "frozen", [("run", _cfg(ants_bees, f"{owner}-run"), 245, 153)]))

    threads = [threading.Thread(target=press, args=(f"tab{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _wait_for(lambda: any(j.status == "running" for j in jobs))  # the worker has taken the first
    waiting = next(j for j in jobs if j.status == "queued")
    assert q.position(waiting) == 1 and q.wait_seconds(waiting) > 0
    for j in jobs:
        _wait(j)
    runs = [j.runs[0] for j in jobs]
    assert all(j.status == "done" for j in jobs), [r.error for r in runs]
    assert all(r.best_val_acc >= 0.9 for r in runs), [r.best_val_acc for r in runs]
    assert sorted(r.feature_hits for r in runs) == [0, 2]
    assert runs[0].history[-1]["val_acc"] == runs[1].history[-1]["val_acc"]  # same seed, same data: same run
    assert len(list_runs(isolated_dirs / "runs")) == 2


def test_a_failing_job_touches_no_other(tiny_folders, isolated_dirs):
    q = TrainingQueue(concurrency=1)
    bad = q.submit("a", "bad", [("run", _cfg(isolated_dirs / "nowhere", "bad", arch="mobilenet_v3_small", weights="none"))])
    good = q.submit("b", "good", [("run", _cfg(tiny_folders, "good", arch="mobilenet_v3_small", weights="none",
                                                freeze="none", train={"epochs": 1}))])
    _wait(bad)
    _wait(good)
    assert bad.status == "error" and "dataset not found" in bad.runs[0].error
    assert good.status == "done" and good.runs[0].run_dir
    assert q.of("a") == [bad] and q.get(good.id, "a") is None  # a tab sees only its own jobs


def test_a_crashing_run_leaves_no_half_run(tiny_folders, isolated_dirs):
    class Boom:
        def on_epoch_end(self, record):
            raise RuntimeError("listener bug")

    cfg = _cfg(tiny_folders, "crash", arch="mobilenet_v3_small", weights="none", freeze="none")
    with pytest.raises(RuntimeError):
        run_experiment(cfg, [Boom()])
    partial = Path(isolated_dirs / "runs" / PARTIAL)
    assert not any(partial.iterdir()) and list_runs(isolated_dirs / "runs") == []


def test_stop_while_queued_is_immediate(tiny_folders, isolated_dirs):
    gate = threading.Event()

    def slow_runner(cfg, listeners, stop):
        gate.wait(30)
        return run_experiment(cfg, listeners, stop=stop)

    q = TrainingQueue(concurrency=1, runner=slow_runner)
    first = q.submit("a", "first", [("run", _cfg(tiny_folders, "first", arch="mobilenet_v3_small", weights="none", train={"epochs": 1}))])
    second = q.submit("b", "second", [("run", _cfg(tiny_folders, "second", arch="mobilenet_v3_small", weights="none"))])
    q.stop(second)
    assert second.status == "stopped" and "before it started" in second.runs[0].outcome()
    gate.set()
    _wait(first)
    assert first.status == "done"


@pytest.mark.parametrize("phase", ["features", "train"])
def test_stop_takes_effect_within_seconds_in_each_phase(ants_bees, mobilenet_file, isolated_dirs, phase):
    q = TrainingQueue(concurrency=1)
    freeze, kw = ("backbone", {"feature_cache": False}) if phase == "features" else ("none", {"epochs": 4})
    job = q.submit("a", "stop me", [("run", _cfg(ants_bees, f"stop-{phase}", freeze=freeze, train=kw), 245, 153)])
    run = job.runs[0]
    if phase == "features":
        _wait_for(lambda: run.phase == "features" and run.done >= 3)
    else:  # one epoch validated, the second under way
        _wait_for(lambda: len(run.history) == 1 and run.phase == "train" and run.done >= 2, timeout=300)
    asked = time.time()
    q.stop(job)
    _wait(job, timeout=30)
    assert time.time() - asked < 5, "stop took too long"
    assert job.status == "stopped"
    text = run.outcome()
    if phase == "features":
        assert "nothing saved" in text and list_runs(isolated_dirs / "runs") == []
    else:
        assert "stopped after 1 of 4 epochs" in text and "kept the best weights" in text
        saved = list_runs(isolated_dirs / "runs")
        assert len(saved) == 1 and saved[0]["summary"]["stopped"] and saved[0]["summary"]["epochs"] == 1


def test_eta_covers_the_whole_job(tiny_folders, isolated_dirs):
    q = TrainingQueue(concurrency=1)
    cfg = _cfg(tiny_folders, "eta", arch="mobilenet_v3_small", weights="none", freeze="none", train={"epochs": 2})
    one = q.submit("a", "one", [("run", cfg, 16, 4)])
    three = q.submit("b", "three", [(f"r{k}", cfg, 16, 4) for k in range(3)])
    assert q.eta_seconds(three) > q.wait_seconds(three) > 0
    assert q.eta_seconds(three) - q.wait_seconds(three) > 2.5 * (q.eta_seconds(one) - q.wait_seconds(one)) * 0.9
    _wait(one)
    _wait(three)
    assert q.eta_seconds(three) == 0 and three.status == "done"


def test_eta_stays_honest_when_feature_extraction_resumes(monkeypatch):
    """Validation features, then decoding the training images, then their features: the
    estimate must follow the measured rate, not collapse when a phase resumes part-way."""
    from core.jobs import progress as jobs_progress
    from core.jobs.estimates import SpeedBook
    from core.jobs.progress import RunProgress
    clock = [1000.0]
    monkeypatch.setattr(jobs_progress.time, "time", lambda: clock[0])
    r = RunProgress("r", _cfg("x", "eta"), 245, 153)
    r.begin()
    book = SpeedBook()
    for k in range(1, 40):  # 39 of 101 feature batches, 0.25 s each (16 img/s: a slow, busy CPU)
        clock[0] += 0.25
        r.on_progress({"phase": "features", "done": k, "total": 101})
    before = r.remaining_seconds(book, "cpu", False)
    for k in range(16, 246, 16):
        clock[0] += 0.5
        r.on_progress({"phase": "decode", "what": "training images", "done": k, "total": 245})
    for k in range(40, 44):
        clock[0] += 0.25
        r.on_progress({"phase": "features", "done": k, "total": 101})
    after = r.remaining_seconds(book, "cpu", False)
    left_features = (101 - 43) * 0.25
    assert before > left_features and left_features * 0.8 < after < left_features * 1.5, (before, after)


def test_the_progress_line_counts_training_batches_after_validation_and_the_unfreeze():
    """The walk saw "epoch 3/6 · unfrozen · batch 0/39" on an 8-batch epoch: after an
    epoch (or the unfreeze) the line took the total of validation's progress events."""
    from core.jobs.estimates import SpeedBook
    from core.jobs.progress import RunProgress
    r = RunProgress("r", _cfg("x", "line", freeze="none", train={"schedule": "fine_tune"}), 245, 153)
    r.begin()
    r.on_run_start({"path": "frozen-features", "prep_seconds": 1.0, "num_train": 245, "num_val": 153,
                    "batches_per_epoch": 8, "phases": [{"name": "frozen"}, {"name": "unfrozen"}]})
    for k in range(1, 9):
        r.on_batch_end({"epoch": 1, "batch": k, "batches": 8, "loss": 0.5})
    for k in range(1, 40):
        r.on_progress({"phase": "val", "epoch": 1, "done": k, "total": 39})
    record = {"epoch": 1, "seconds": 2.0, "val_seconds": 1.0, "path": "frozen-features"}
    r.on_epoch_end(record)
    assert r.phase_text().endswith("batch 0/8"), r.phase_text()
    # The unfreeze reads the training images, then (first time on this machine) times its
    # micro-batches: the walk saw "reading training images 245/245" stand still for 12 s.
    r.on_progress({"phase": "decode", "what": "training images", "done": 245, "total": 245})
    r.on_progress({"phase": "tune", "done": 0, "total": 1})
    assert r.phase_text().startswith("timing this machine's micro-batch sizes"), r.phase_text()
    # While timing, both unfrozen epochs are still ahead, plus what is left of the timing
    # (the walk saw "7 s left" stand still for the 10 s it took, then jump to 30 s).
    book = SpeedBook()
    plain_epoch = book.phase_seconds("mobilenet_v2", "cpu", "train", 245) + book.phase_seconds("mobilenet_v2", "cpu", "val", 153)
    left = r.remaining_seconds(book, "cpu", True)
    assert 2 * plain_epoch < left <= 2 * plain_epoch + 10.5, (left, plain_epoch)
    r.on_phase_start({"phase": "unfrozen", "path": "plain", "epoch": 2})
    assert r.phase_text() == "epoch 2/3 · unfrozen · batch 0/8", r.phase_text()


def test_eta_of_a_fine_tune_run_counts_its_head_epochs_and_its_plain_ones(monkeypatch):
    """fine_tune with a body to unfreeze: features once, head epochs on them, then plain
    epochs after decoding the training images again; the estimate follows the phases."""
    from core.jobs import progress as jobs_progress
    from core.jobs.estimates import SpeedBook, epochs_seconds, plan_seconds, uses_frozen_path
    from core.jobs.progress import RunProgress
    book = SpeedBook()
    tuned = _cfg("x", "ft", freeze="none", train={"epochs": 5, "schedule": "fine_tune", "freeze_epochs": 2})
    plain = _cfg("x", "plain", freeze="none", train={"epochs": 5, "schedule": "standard"})
    frozen = _cfg("x", "frozen", freeze="backbone", train={"epochs": 5, "schedule": "fine_tune"})
    p = plan_seconds(book, tuned, "cpu", 245, 153, False)
    assert p["head_epochs"] == 2 and p["features"] > 0 and p["unfreeze"] > 0
    assert epochs_seconds(p, 1) == 2 * p["head_epoch"] + 3 * p["plain_epoch"] + p["unfreeze"]
    assert uses_frozen_path(tuned) and not uses_frozen_path(plain) and uses_frozen_path(frozen)
    total = {name: (lambda q: q["decode"] + q["features"] + epochs_seconds(q, 1))(plan_seconds(book, c, "cpu", 245, 153, False))
             for name, c in (("tuned", tuned), ("plain", plain), ("frozen", frozen))}
    assert total["frozen"] < total["tuned"] < total["plain"] + total["frozen"]

    clock = [1000.0]
    monkeypatch.setattr(jobs_progress.time, "time", lambda: clock[0])
    r = RunProgress("r", tuned, 245, 153)
    r.begin()
    r.on_run_start({"path": "frozen-features", "prep_seconds": 30.0, "num_train": 245, "num_val": 153,
                    "batches_per_epoch": 8, "phases": [{"name": "frozen"}, {"name": "unfrozen"}]})
    at_start = r.remaining_seconds(book, "cpu", True)
    for e in (1, 2):
        clock[0] += 0.2
        r.on_epoch_end({"epoch": e, "seconds": 0.2, "val_seconds": 0.05, "path": "frozen-features", "phase": "frozen"})
    for k in range(16, 246, 16):  # the unfreeze decodes the training images again
        clock[0] += 0.2
        r.on_progress({"phase": "decode", "what": "training images", "done": k, "total": 245})
    while_decoding = r.remaining_seconds(book, "cpu", True)
    r.on_phase_start({"phase": "unfrozen", "path": "plain", "epoch": 3})
    r.on_batch_end({"epoch": 3, "batch": 1, "batches": 8})
    assert "unfrozen" in r.phase_text() and "epoch 3/5" in r.phase_text()
    after = r.remaining_seconds(book, "cpu", True)
    three_plain = 3 * plan_seconds(book, tuned, "cpu", 245, 153, True)["plain_epoch"]
    assert at_start > while_decoding > after > 0 and after <= three_plain * 1.01, (at_start, while_decoding, after)


def test_an_lr_find_job_estimates_and_stops_and_a_failing_one_is_contained(tiny_folders, isolated_dirs):
    q = TrainingQueue(concurrency=1)
    bad = q.submit("a", "bad", [("sweep", _cfg(isolated_dirs / "nowhere", None, arch="mobilenet_v3_small", weights="none"))],
                   kind="lr_find")
    whole = _cfg(tiny_folders, None, arch="mobilenet_v3_small", weights="none", freeze="none",
                 train={"schedule": "standard", "batch_size": 4})
    job = q.submit("a", "sweep", [("sweep", whole, 16, 4)], kind="lr_find")
    assert job.runs[0].iters == 30 and 0 < q.eta_seconds(job) < 600  # the whole network: 30 steps
    _wait(bad)
    assert bad.status == "error" and "dataset not found" in bad.runs[0].error and bad.result is None
    r = job.runs[0]
    _wait_for(lambda: r.steps >= 3, timeout=180)
    assert "step" in r.phase_text() and q.eta_seconds(job) >= 0 and 0 < q.progress(job) < 1
    q.stop(job)
    _wait(job, timeout=30)
    assert job.status == "stopped" and job.result["stopped"] and 3 <= job.result["iters"] < 30
    assert job.result["path"] == "plain" and "stopped after" in r.outcome()
    assert list_runs(isolated_dirs / "runs") == []  # a sweep saves nothing

    head = _cfg(tiny_folders, None, arch="mobilenet_v3_small", weights="none", freeze="none",
                train={"schedule": "fine_tune", "epochs": 2})
    done = q.submit("a", "head sweep", [("sweep", head, 16, 4)], kind="lr_find")
    assert done.runs[0].iters == 100
    _wait(done)
    assert done.status == "done" and done.result["path"] == "frozen-features" and done.result["phase"] == "frozen"
    assert done.result["iters"] >= 3 and done.result["suggestion"] and "suggests" in done.runs[0].outcome()
    assert q.eta_seconds(done) == 0
    with pytest.raises(ValueError):
        q.submit("a", "what", [], kind="dance")


def test_a_server_queue_trains_at_a_lower_priority_than_its_pages():
    """The worker thread (and the threads it starts) run niced, so drawing a page never
    waits behind training; the thread's own nice value is what the kernel reports."""
    import os
    import threading
    seen = {}

    def runner(cfg, listeners, stop=None):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        raise RuntimeError("not trained: a test")
    q = TrainingQueue(concurrency=1, device="cpu", runner=runner, nice=7)
    job = q.submit("a" * 32, "t", [("run", object(), 1, 1)])
    end = time.time() + 10
    while job.active and time.time() < end:
        time.sleep(0.02)
    assert seen["nice"] == os.getpriority(os.PRIO_PROCESS, 0) + 7


def test_the_runs_queued_behind_are_re_estimated_after_one_epoch_not_one_run():
    """A data-efficiency sweep's ETA jumped 7 -> 20 min when its first scratch point ended:
    the speed book learnt only from whole runs.  Now an epoch's measured rate reaches the
    book at once, so the second run's estimate follows the first run's first epoch."""
    from types import SimpleNamespace
    entered, release = threading.Event(), threading.Event()

    def slow_runner(cfg, listeners, stop=None):
        for epoch in (1, 2):  # 245 images in 38 s (6 img/s, a fifth of the prior) + 2 s of validation
            for listener in listeners:
                listener.on_epoch_end({"epoch": epoch, "seconds": 40.0, "val_seconds": 2.0, "path": "plain",
                                       "val_acc": 0.5, "val_loss": 1.0, "train_acc": 0.5, "train_loss": 1.0})
            if epoch == 1:
                entered.set()
                release.wait(30)
        return None, SimpleNamespace(best_val_acc=0.5, history=[{}], stopped=False, stop_phase="", path="plain"), 40.0

    q = TrainingQueue(concurrency=1, device="cpu", runner=slow_runner)
    cfg = _cfg("x", "eta", arch="mobilenet_v2", weights="none", freeze="none", train={"epochs": 5})
    job = q.submit("a", "two", [("first", cfg, 245, 153), ("second", cfg, 245, 153)])
    second = job.runs[1]
    before = second.remaining_seconds(q.book, "cpu", False)
    try:
        assert entered.wait(30)
        after = second.remaining_seconds(q.book, "cpu", False)
        # The book's EMA starts at the measurement: 5 epochs of ~40 s, plus decoding.
        assert after > 2.5 * before and 5 * 38 < after < 5 * 50, (before, after)
    finally:
        release.set()
    _wait(job)
    assert job.status == "done"
