"""A GPU out-of-memory error is a setting to change: one clear message naming the batch
size, the GPU's cache emptied, the next job runs, the CLI's one line (issue #20, finding 4).
The error is injected (``torch.cuda.OutOfMemoryError`` exists on CPU builds too)."""
import sys
import time

import torch

from core.cli import main
from core.device import inference_batch_size
from core.jobs.queue import TrainingQueue
from core.runs.store import PARTIAL, list_runs
from core.training import oom
from core.training.experiment import ExperimentConfig, run_experiment
from core.training.passes import Passes
from core.training.trainer import TrainConfig

OOM_SEED = 13  # the runs whose training step runs out of memory


def _inject(monkeypatch):
    """Training steps of runs seeded ``OOM_SEED`` fail as CUDA's allocator fails; ``freed``
    counts the frees, each made once the error (and the tensors its frames hold) was dropped."""
    original, freed = Passes._backward, []

    def backward(self, loss):
        if self.cfg.seed == OOM_SEED:
            held = torch.zeros(1000)  # noqa: F841 - a tensor the failed step's frame holds
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, loss)

    monkeypatch.setattr(Passes, "_backward", backward)
    monkeypatch.setattr(oom, "free_memory", lambda: freed.append(sys.exc_info()[0]))
    return freed


def _cfg(data, name, seed):
    return ExperimentConfig(data=str(data), arch="mobilenet_v3_small", weights="none", freeze="none", name=name,
                            device="cpu", train=TrainConfig(epochs=1, batch_size=8, micro_batch=8, seed=seed))


def test_out_of_memory_names_the_batch_size_and_leaves_no_run(tiny_folders, isolated_dirs, monkeypatch):
    freed = _inject(monkeypatch)
    try:
        run_experiment(_cfg(tiny_folders, "oom", OOM_SEED))
        raise AssertionError("the injected error did not surface")
    except oom.OutOfMemory as e:
        text, context = str(e), e.__context__
    assert "at batch size 8" in text and "try batch size 4" in text and "micro-batch to 4" in text, text
    assert context is None  # nothing chained: the CUDA error's frames (and their tensors) are gone
    assert freed == [None]  # freed once, outside the handler
    runs = isolated_dirs / "runs"
    assert list_runs(runs) == [] and not any((runs / PARTIAL).iterdir())


def test_free_memory_empties_the_cuda_cache(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    oom.free_memory()
    assert emptied == [1]


def test_the_queue_shows_the_message_and_runs_the_next_job(tiny_folders, isolated_dirs, monkeypatch):
    _inject(monkeypatch)
    q = TrainingQueue(concurrency=1, device="cpu")
    bad = q.submit("a", "bad", [("run", _cfg(tiny_folders, "bad", OOM_SEED))])
    good = q.submit("b", "good", [("run", _cfg(tiny_folders, "good", 0))])
    end = time.time() + 300
    while bad.active or good.active:
        assert time.time() < end, "jobs still running"
        time.sleep(0.05)
    run = bad.runs[0]
    assert bad.status == "error" and run.error.startswith("out of GPU memory training mobilenet_v3_small at batch size 8")
    assert not run.trace  # a setting to change, not a bug with a traceback
    assert good.status == "done" and good.runs[0].run_dir


def test_the_cli_prints_one_line_and_exits_2(tiny_folders, tmp_path, monkeypatch, capsys):
    _inject(monkeypatch)
    code = main(["train", str(tiny_folders), "--arch", "mobilenet_v3_small", "--weights", "none", "--freeze", "none",
                 "--epochs", "1", "--batch-size", "8", "--micro-batch", "8", "--seed", str(OOM_SEED),
                 "--device", "cpu", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: out of GPU memory training mobilenet_v3_small "
                                                             "at batch size 8"), err


def test_the_inference_batch_follows_the_architecture():
    gpu, cpu = torch.device("cuda"), torch.device("cpu")  # a device object: no GPU is touched
    assert inference_batch_size(gpu, "mobilenet_v2") == 128
    assert inference_batch_size(gpu, "resnet50") == 64
    assert inference_batch_size(gpu, "vit_h_14") == 8  # 1 TFLOP per image at 518 px: 128 of them did not fit
    assert inference_batch_size(cpu, "vit_h_14") == inference_batch_size(cpu, "mobilenet_v2") == 4
