"""One training job at a time on every device, a GPU included: two at once share torch's
global RNG, so a run's crops, shuffles and dropout would depend on the other job's timing
(issue #20, finding 2; ``queue.default_concurrency``)."""
import threading
import time

from core.jobs.queue import TrainingQueue, default_concurrency
from core.training.experiment import ExperimentConfig
from core.training.trainer import TrainConfig, TrainResult


def test_one_job_at_a_time_on_a_gpu_too(tmp_path):
    assert [default_concurrency(d) for d in ("cpu", "cuda", "mps")] == [1, 1, 1]
    running, overlap, lock = [0], [0], threading.Lock()

    def runner(cfg, listeners, stop):  # stands in for training: no GPU is touched
        with lock:
            running[0] += 1
            overlap[0] = max(overlap[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return None, TrainResult(), 0.3

    q = TrainingQueue(device="cuda", runner=runner)
    cfg = ExperimentConfig(data=str(tmp_path), train=TrainConfig(epochs=1))
    jobs = [q.submit(f"tab{k}", "run", [("run", cfg)]) for k in range(2)]
    end = time.time() + 30
    while any(j.active for j in jobs):
        assert time.time() < end, "jobs still running"
        time.sleep(0.02)
    assert q.concurrency == 1 and overlap[0] == 1
