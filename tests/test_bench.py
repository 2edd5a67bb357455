"""``python -m core bench`` measures a GPU honestly (issue #20, finding 7): both sides on
the same device, timed regions closed by a synchronize, the GPU's own peak memory."""
import torch

from core import bench


def test_timed_regions_wait_for_cuda_and_nothing_else(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(str(device)))
    bench.sync(torch.device("cuda", 1))
    bench.sync(torch.device("cpu"))
    assert waited == ["cuda:1"]


def test_the_peak_on_a_gpu_is_the_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    assert bench.peak_memory(torch.device("cuda"))["gpu_peak_mb"] == 3072
    assert "gpu_peak_mb" not in bench.peak_memory(torch.device("cpu"))
    row = {"baseline": {"peak_mb": 900, "gpu_peak_mb": 3072, "s_per_epoch": 2, "best_val_acc": 0.9},
           "ours": {"peak_mb": 800, "gpu_peak_mb": 1024, "s_per_epoch": 1, "best_val_acc": 0.9, "images_per_s": 9,
                    "num_train": 10, "num_val": 4}, "epochs": 1, "speedup": 2.0}
    table = bench.markdown({"floor": {"train_img_s_by_size": {8: 1.0}, "infer_img_s": 1.0}, "machine": "GPU: test",
                            "arch": "mobilenet_v2", "batch_size": 32, "cpu": {"model": "test", "threads": 1},
                            "modes": {"finetune": row}})
    assert "peak GPU MB" in table and "| 3072 / 1024 |" in table


def test_the_tutorial_baseline_trains_on_the_device_ours_uses(tiny_split, monkeypatch):
    import core.device
    asked = []

    def pick(name="auto"):
        asked.append(name)
        return torch.device("cpu")
    monkeypatch.setattr(core.device, "pick_device", pick)
    out = bench.baseline(str(tiny_split), "mobilenet_v3_small", "scratch", 1, 8, 0)
    assert asked == ["auto"] and out["device"] == "cpu" and 0 <= out["best_val_acc"] <= 1
