"""``torchrun --nproc_per_node=2 -m core train`` on CPU (gloo), on the real ants/bees photos:
one run folder, the single-process accuracy at the same global batch and seed, one JSON
line, no rank left running; and a rank killed mid-epoch ends the others with one line
and no half run.  Everything else of distributed.py runs without a process group."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core.training import distributed

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_BATCH = "32"
FINE_TUNE = ["--freeze", "5", "--schedule", "fine_tune", "--epochs", "2"]  # the recipe's rates (schedules.py)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One feature cache for the module: the fine-tune runs' head-only epoch reuses the
    frozen runs' features (one process: the same key; two: each rank's shard key)."""
    return tmp_path_factory.mktemp("data")


def _env(data: Path) -> dict:
    return {**os.environ, "TRANSFERLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TRANSFERLAB_DATA": str(data)}


def _torchrun(nproc: int) -> list[str]:
    exe = shutil.which("torchrun")
    return [*([exe] if exe else [sys.executable, "-m", "torch.distributed.run"]),
            "--standalone", f"--nproc_per_node={nproc}", "-m", "core"]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


class Launch:
    """A torchrun (or plain CLI) process, its output read as it comes, its workers recorded."""

    def __init__(self, cmd: list[str], env: dict):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.workers: set[int] = set()
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self, stream, buf):
        for line in stream:
            buf.append(line.rstrip("\n"))

    def _watch(self):
        while self.proc.poll() is None:
            self.workers.update(_children(self.proc.pid))
            time.sleep(0.2)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.seconds = time.perf_counter() - self.t0
        for t in self._readers:
            t.join(5)
        return rc

    def rank_pid(self, rank: int) -> int:
        for pid in _children(self.proc.pid):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return pid
        raise AssertionError(f"no worker with RANK={rank} under torchrun {self.proc.pid}")


def _train(cmd_head: list[str], data, runs: Path, extra: list[str], data_dir: Path) -> tuple[dict, Launch]:
    run = Launch([*cmd_head, "train", str(data), "--batch-size", GLOBAL_BATCH, "--seed", "0", "--runs-dir", str(runs),
                  *extra], _env(data_dir))
    rc = run.wait(timeout=600)
    assert rc == 0, "\n".join(run.out + run.err)
    return json.loads(run.out[-1]), run


def _compare(ants_bees, tmp_path, data_dir, extra: list[str], epochs: int) -> None:
    single, one = _train([sys.executable, "-m", "core"], ants_bees, tmp_path / "runs1", extra, data_dir)
    summary, two = _train(_torchrun(2), ants_bees, tmp_path / "runs2", extra, data_dir)
    last = [json.loads((Path(s["run_dir"]) / "history.json").read_text())[-1]["val_acc"] for s in (single, summary)]
    print(f"\nwall seconds: 1 process {one.seconds:.1f}, 2 processes {two.seconds:.1f}; best val acc "
          f"{single['best_val_acc']:.3f} vs {summary['best_val_acc']:.3f}, last epoch {last[0]:.3f} vs {last[1]:.3f}")
    # One run, finished, nothing left half-written; rank 0 alone printed.
    assert [p.name for p in (tmp_path / "runs2").iterdir() if not p.name.startswith(".")] == [Path(summary["run_dir"]).name]
    assert not any((tmp_path / "runs2" / ".partial").iterdir())
    assert sum(line.startswith("{") for line in two.out) == 1 and two.out[-1].startswith("{")
    assert sum(line.startswith("training on") for line in two.out) == 1
    assert [line.split()[1] for line in two.out if line.startswith("epoch")] == [str(e) for e in range(1, epochs + 1)]
    assert summary["num_train"] == 245 and summary["num_val"] == 153 and summary["epochs"] == epochs
    assert json.loads((Path(summary["run_dir"]) / "config.json").read_text())["processes"] == 2
    assert abs(summary["best_val_acc"] - single["best_val_acc"]) <= 0.02
    assert last[1] >= 0.9  # the last epoch (under DDP in fine-tune mode) trained, not wrecked, the model
    assert len(two.workers) >= 2 and not any(_alive(p) for p in two.workers)


@pytest.mark.slow
def test_torchrun_frozen_matches_one_process(ants_bees, mobilenet_file, tmp_path, data_dir):
    _compare(ants_bees, tmp_path, data_dir, ["--epochs", "3"], 3)


@pytest.mark.slow
def test_torchrun_fine_tune_matches_one_process(ants_bees, mobilenet_file, tmp_path, data_dir):
    # The last four stages and the head train after one head-only epoch (--freeze 5 keeps
    # the first five frozen): the plain path under DDP, at half the backward cost.
    _compare(ants_bees, tmp_path, data_dir, FINE_TUNE, 2)


def _wait_for(run: Launch, prefix: str) -> None:
    end = time.time() + 300
    while not any(line.startswith(prefix) for line in run.out):
        assert run.proc.poll() is None and time.time() < end, "\n".join(run.out + run.err)
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0, "torchrun"])
def test_a_killed_rank_or_a_stop_ends_every_rank_with_one_line(ants_bees, mobilenet_file, tmp_path, data_dir, victim):
    """SIGKILL to one worker (no chance to clean up), or SIGTERM to torchrun (a stop, which
    torchrun forwards): the others end and one line says why.  Rank 1 dies in epoch 2:
    rank 0 keeps epoch 1 as a stopped run.  Rank 0 dies, or the stop comes, in epoch 1:
    nothing was validated, and no run is left, not even partial."""
    runs = tmp_path / "runs"
    run = Launch([*_torchrun(2), "train", str(ants_bees), "--freeze", "5", "--epochs", "2", "--runs-dir", str(runs)],
                 _env(data_dir))
    _wait_for(run, "epoch" if victim == 1 else "training on")
    time.sleep(1.0)
    if victim == "torchrun":
        os.kill(run.proc.pid, signal.SIGTERM)
        expected = "error: stopped before the first epoch was validated; no run was saved"  # as one process says
    else:
        pid = run.rank_pid(victim)
        os.kill(pid, signal.SIGKILL)
        expected = f"error: rank {victim} of 2 (pid {pid}) ended unexpectedly; all ranks stopped"
        expected += "; kept epoch 1 (val acc " if victim == 1 else " and no run was saved"
    rc = run.wait(timeout=90)
    assert rc != 0
    errors = [line for line in run.err if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), "\n".join(run.err)
    # No traceback from a worker (torchrun prints its own failure report; no frame of ours in it).
    assert not [line for line in run.err if line.strip().startswith("File ") and str(ROOT / "core") in line]
    assert not any(line.startswith("{") for line in run.out)
    kept = [p for p in runs.iterdir() if not p.name.startswith(".")]
    if victim == 1:
        assert len(kept) == 1 and errors[0].endswith(f"as a stopped run: {kept[0]}")
        summary = json.loads((kept[0] / "summary.json").read_text())
        assert summary["stopped"] is True and summary["epochs"] == 1 and summary["best_epoch"] == 1
        assert f"(val acc {summary['best_val_acc']:.3f})" in errors[0]
        assert (kept[0] / "weights.safetensors").is_file()
    else:
        assert not kept
    assert not any((runs / ".partial").iterdir())  # rank 0 abandoned it, or a survivor removed it
    assert not any(_alive(p) for p in run.workers)


@pytest.mark.slow
def test_a_stop_under_torchrun_keeps_the_best_epoch_so_far(ants_bees, mobilenet_file, tmp_path, data_dir):
    """SIGTERM to torchrun (what a scheduler or Ctrl-C sends; torchrun forwards it) during
    epoch 2: the ranks vote at each batch and stop at the same one, rank 0 saves epoch 1
    as a stopped run and prints the one JSON line; nobody prints an error."""
    runs = tmp_path / "runs"
    run = Launch([*_torchrun(2), "train", str(ants_bees), "--freeze", "5", "--epochs", "3", "--runs-dir", str(runs)],
                 _env(data_dir))
    _wait_for(run, "epoch")
    os.kill(run.proc.pid, signal.SIGTERM)
    run.wait(timeout=90)
    assert not [line for line in run.err if line.startswith("error:")], "\n".join(run.err)
    assert sum("stopping after the current batch" in line for line in run.err) == 1
    assert sum(line.startswith("{") for line in run.out) == 1, "\n".join(run.out + run.err)
    summary = json.loads(run.out[-1])
    assert summary["stopped"] is True and summary["epochs"] == 1 and summary["best_epoch"] == 1
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["stopped"] is True and saved["epochs"] == 1
    assert (Path(summary["run_dir"]) / "weights.safetensors").is_file()
    assert not any((runs / ".partial").iterdir())
    assert not any(_alive(p) for p in run.workers)


@pytest.mark.slow
def test_ctrl_c_in_one_process_keeps_the_best_epoch(ants_bees, mobilenet_file, tmp_path, data_dir):
    """The single-process CLI: SIGINT ends training at the next batch with the best epoch
    saved, as the dashboard's Stop does."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "core", "train", str(ants_bees), "--epochs", "400", "--runs-dir", str(runs)]
    run = Launch(cmd, _env(data_dir))  # the frozen path: epochs take milliseconds after one feature pass
    _wait_for(run, "epoch")
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(timeout=120) == 0, "\n".join(run.err)
    summary = json.loads(run.out[-1])
    assert summary["stopped"] is True and 1 <= summary["epochs"] < 400
    assert [line for line in run.err if line.startswith("stopped after")] == [
        f"stopped after {summary['epochs']} epoch(s): kept epoch {summary['best_epoch']} (val acc {summary['best_val_acc']:.3f})"]
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["stopped"] is True



def test_a_signal_inside_the_forward_window_is_the_same_stop_and_a_later_one_aborts(monkeypatch, capsys):
    """Under torchrun one Ctrl-C arrives twice (the terminal's, then torchrun's forward): that
    must stay one stop request.  A signal after the window aborts, keeping nothing."""
    from core.training import stop_signals
    now = [100.0]
    monkeypatch.setattr(stop_signals.time, "monotonic", lambda: now[0])
    signals = stop_signals.StopOnSignal("stopping (notice)")
    previous = {sig: signal.getsignal(sig) for sig in stop_signals.STOP_SIGNALS}
    try:
        signals._handle(signal.SIGINT, None)
        assert signals.event.is_set()
        now[0] += stop_signals.FORWARD_WINDOW_S / 2
        signals._handle(signal.SIGINT, None)  # the forward: no abort
        now[0] += stop_signals.FORWARD_WINDOW_S
        with pytest.raises(KeyboardInterrupt):
            signals._handle(signal.SIGINT, None)
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in stop_signals.STOP_SIGNALS)  # cleanup runs in peace
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert capsys.readouterr().err.count("stopping (notice)") == 1
    alone = stop_signals.StopOnSignal(None, window_s=0.0)  # one process: nothing forwards, the second aborts
    try:
        alone._handle(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):
            alone._handle(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- without a process group --------------------------------------------------------------
def test_single_process_hooks_are_no_ops():
    r = distributed.SINGLE
    assert not r.active and r.is_main and r.local_batch(32) == 32 and r.shard_len(245) == 245
    assert r.shard([1, 2, 3]) == [1, 2, 3] and r.train_sampler(10, 0) is None and r.seed_offset("plain") == 0
    assert r.sum(1.5, 2) == [1.5, 2] and r.from_main(lambda: 7) == 7
    model = torch.nn.Linear(2, 2)
    assert r.wrap(model) is model and r.sync_batchnorm(model) is model


def test_shards_cover_every_item_once_and_the_global_batch_is_split():
    n, world = 153, 2
    ranks = [distributed.Ranks(rank=k, world=world) for k in range(world)]
    shards = [r.shard(list(range(n))) for r in ranks]
    assert sorted(sum(shards, [])) == list(range(n))  # validation: no padding, nothing twice
    assert [r.local_batch(32) for r in ranks] == [16, 16] and ranks[0].local_batch(33) == 17
    # Training: each rank decodes only its share, fixed for the run, and shuffles it per epoch.
    shares = [r.train_share(245, seed=0) for r in ranks]
    assert sorted(shares[0] + shares[1]) == list(range(245)) and len(shares[0]) == 123 and len(shares[1]) == 122
    assert shares == [r.train_share(245, seed=0) for r in ranks] != [r.train_share(245, seed=1) for r in ranks]
    assert shares[0] != list(range(0, 245, 2))  # a seeded mix: ImageFolder lists the classes in blocks
    samplers = [r.train_sampler(245, seed=0) for r in ranks]
    orders = {}
    for epoch in (3, 4):
        for k, s in enumerate(samplers):
            s.set_epoch(epoch)
            orders[epoch, k] = list(s)
            assert len(orders[epoch, k]) == ranks[0].shard_len(245) == 123  # equal steps on every rank
            assert set(orders[epoch, k]) == set(range(len(shares[k])))  # positions in its own share, all of them
    assert orders[3, 0] != orders[4, 0] and orders[3, 1] != orders[4, 1]  # a new shuffle each epoch
    assert len(set(orders[3, 1])) == 122  # rank 1's 122 images, one of them twice (the padding)


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    r = distributed.from_env()
    assert (r.rank, r.world, r.local_rank, r.is_main, r.active) == (3, 4, 1, False, True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.from_env().active


def test_threads_are_shared_out_among_local_processes(monkeypatch):
    from core.data.batches import workers
    from core.device import configure_threads
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(workers()))
        configure_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_sync_batchnorm_is_refused_on_cpu_with_a_reason():
    r = distributed.Ranks(rank=0, world=2, device=torch.device("cpu"))
    with pytest.raises(distributed.TransferLabError, match="needs CUDA"):
        r.sync_batchnorm(torch.nn.BatchNorm2d(3))


def test_torchruns_stop_landing_while_a_survivor_reports_a_lost_peer_adds_no_second_line(capsys, monkeypatch):
    """torchrun SIGTERMs the survivors when a rank dies, often while one is printing why.
    CI once saw "rank 0 ... ended unexpectedly" followed by "error: interrupted": the
    report must stay one line however the two race.  The SIGTERM is sent from inside the
    report (where the race put it), with the handler torchrun ranks run under."""
    from core.training import stop_signals
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ranks = distributed.Ranks(rank=1, world=2, peers=[(os.uname().nodename, gone.pid), (os.uname().nodename, os.getpid())])
    monkeypatch.setattr(distributed.socket, "gethostname", lambda: os.uname().nodename)
    monkeypatch.setattr(distributed.Ranks, "leave", lambda self, why: os.kill(os.getpid(), signal.SIGTERM))
    previous = {sig: signal.signal(sig, stop_signals.abort) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = distributed._stopped(ranks, RuntimeError("Connection reset by peer"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert status == 1
    assert errors == [f"error: rank 0 of 2 (pid {gone.pid}) ended unexpectedly; all ranks stopped and no run was saved"]


def test_more_processes_than_gpus_is_one_line_before_anything_starts(monkeypatch, capsys, tmp_path):
    """``--nproc_per_node=2`` on a one-GPU machine (device auto): every process stops before
    the process group or a device is touched, and one line says why (issue #20, finding 5);
    it ended in "invalid device ordinal" with a traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    started = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: started.append(f"cuda:{index}"))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: started.append("process group"))
    monkeypatch.setattr(distributed.tempfile, "gettempdir", lambda: str(tmp_path))  # where ranks leave their notes
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(name, value)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    codes = []
    try:
        for rank in (0, 1):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("LOCAL_RANK", str(rank))
            codes.append(distributed.run_command("auto", lambda ranks, stop: started.append("training") or 0))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert codes == [2, 2] and started == []
    assert capsys.readouterr().err.splitlines() == [
        "error: torchrun started 2 processes on this machine but it has 1 GPU(s): use --nproc_per_node=1 "
        "(one process per GPU), or --device cpu"]


def test_a_rank_decodes_only_its_share_of_the_training_images(tiny_folders):
    """Under torchrun each rank reads its own share of the training photos (and of the
    validation ones), not the whole set: N processes, not N times the decoding."""
    from core.data.datasets import scan_dataset
    from core.data.transforms import TransformSpec
    from core.models import surgery
    from core.models.zoo import ModelSpec, instantiate
    from core.training.trainer import TrainConfig, TrainResult, Trainer

    class TwoRanksWithoutAGroup(distributed.Ranks):  # rank 1 of 2; the collectives answer locally
        def from_main(self, compute):
            return compute()

        def wrap(self, model):
            return model

    ds = scan_dataset(tiny_folders)
    model = instantiate(ModelSpec("mobilenet_v3_small", 2))
    surgery.freeze(model, "mobilenet_v3_small", "none")
    ranks = TwoRanksWithoutAGroup(rank=1, world=2)
    trainer = Trainer(model, "mobilenet_v3_small", ds.train, ds.val, TransformSpec(crop_size=32, resize_size=36),
                      TrainConfig(epochs=1, batch_size=8, micro_batch=4), torch.device("cpu"), ranks=ranks)
    trainer.base_trainable = {n: True for n, _ in model.named_parameters()}
    trainer._prepare(TrainResult())
    share = ranks.train_share(len(ds.train), 0)
    assert len(trainer.train_source.cache) == len(share) == len(ds.train) // 2
    assert [int(y) for y in trainer.train_source.cache.labels] == [ds.train[i][1] for i in share]
    assert len(trainer.val_source.cache) == len(ds.val[1::2])
    seen = [i for _, y in trainer.train_source for i in y.tolist()]
    assert len(seen) == ranks.shard_len(len(ds.train))


def test_more_processes_than_training_images_is_a_bad_input_not_a_traceback(tiny_folders, tmp_path):
    """torchrun --nproc-per-node 30 on 20 training photos: a rank would train on nothing.
    The check sits in the setup every rank agrees on, so the CLI prints it as one line."""
    from core.errors import DatasetError
    from core.training.experiment import ExperimentConfig, run_experiment

    class Thirty(distributed.Ranks):
        def agreed(self, setup):  # no process group here: the one-process view of the agreement
            return setup()

    cfg = ExperimentConfig(data=str(tiny_folders), arch="resnet18", weights="none")
    with pytest.raises(DatasetError, match=r"training image\(s\) for 30 processes: start torchrun with at most"):
        run_experiment(cfg, runs_dir=tmp_path / "runs", ranks=Thirty(rank=0, world=30, device=torch.device("cpu")))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
