"""The trainer: BatchNorm rule, reproducibility, stop signal, and fast paths that change
speed and not meaning."""
import torch
from torch import nn

from core.training import features

from core.models import surgery
from core.data.datasets import scan_dataset
from core.device import pick_device
from core.training.experiment import ExperimentConfig, run_experiment
from core.data.batches import BatchSource
from core.data.images import load_rgb
from core.runs.store import list_runs, load_run
from core.training.trainer import TrainConfig, Trainer
from core.data.transforms import TransformSpec, eval_transform
from core.models.zoo import ModelSpec, instantiate

CPU = torch.device("cpu")
SPEC = TransformSpec(crop_size=32, resize_size=36)


def _small_model(freeze="backbone"):
    torch.manual_seed(0)
    m = instantiate(ModelSpec("mobilenet_v3_small", 2))
    surgery.freeze(m, "mobilenet_v3_small", freeze)
    return m


def test_frozen_batchnorm_statistics_unchanged(tiny_folders):
    ds = scan_dataset(tiny_folders)
    model = _small_model(2)  # stem + first block frozen, the rest trains
    frozen_bn = model.features[0][1]
    trained_bn = model.features[5].block[0][1]
    before_frozen = frozen_bn.running_mean.clone()
    before_trained = trained_bn.running_mean.clone()
    Trainer(model, "mobilenet_v3_small", ds.train, ds.val, SPEC, TrainConfig(epochs=1, batch_size=8), CPU).fit()
    assert torch.equal(frozen_bn.running_mean, before_frozen)
    assert not torch.equal(trained_bn.running_mean, before_trained)  # the control: trainable BN does move


def _history(ds, fast, freeze="none"):
    cfg = TrainConfig(epochs=2, batch_size=8, seed=5, fast=fast)
    r = Trainer(_small_model(freeze), "mobilenet_v3_small", ds.train, ds.val, SPEC, cfg, CPU).fit()
    return [{k: v for k, v in h.items() if k not in ("seconds", "val_seconds", "images_per_s")} for h in r.history]


def test_same_seed_same_history(tiny_folders):
    ds = scan_dataset(tiny_folders)
    assert _history(ds, fast=True) == _history(ds, fast=True)
    assert _history(ds, fast=False, freeze="backbone") == _history(ds, fast=False, freeze="backbone")


def test_decoded_cache_gives_the_pil_evaluation_tensors(ants_bees):
    ds = scan_dataset(ants_bees)
    spec = TransformSpec()
    samples = ds.val[:12]
    cached = torch.cat([x for x, _ in BatchSource(samples, spec, False, 5)])
    tf = eval_transform(spec)
    plain = torch.stack([tf(load_rgb(p)) for p, _ in samples])
    assert torch.equal(cached, plain)


def test_head_on_cached_features_matches_full_training():
    """Same batches, same seed: training the tail on cached inputs = training the model."""
    torch.manual_seed(1)
    x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 2, (16,))

    def make():
        torch.manual_seed(0)
        m = instantiate(ModelSpec("mobilenet_v2", 2, dropout=0.0))
        surgery.freeze(m, "mobilenet_v2", "backbone")
        return m
    full, fast = make(), make()
    entry, tail = features.find_tail(fast, "mobilenet_v2")
    assert features.fast_path_blocker(surgery.train_mode(fast), "mobilenet_v2") is None
    cached = features.tail_inputs(fast, entry, [(x, y)], CPU)
    for net, inputs in ((full, x), (tail, cached)):
        params = [p for p in (full if net is full else fast).parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        surgery.train_mode(full if net is full else fast)
        for step in range(3):
            torch.manual_seed(100 + step)  # dropout in classifier.0 draws the same masks
            loss = nn.functional.cross_entropy(net(inputs), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.allclose(full.classifier[1].weight, fast.classifier[1].weight, atol=1e-5)
    full.eval(), fast.eval()
    with torch.inference_mode():
        assert torch.allclose(full(x), fast(x), atol=1e-4)


def test_fast_path_refused_when_body_trains_or_aux_heads():
    m = _small_model("none")
    assert "outside the head" in features.fast_path_blocker(surgery.train_mode(m), "mobilenet_v3_small")
    g = instantiate(ModelSpec("googlenet", 2))
    surgery.freeze(g, "googlenet", "backbone")
    assert "auxiliary" in features.fast_path_blocker(surgery.train_mode(g), "googlenet")


class StopAfterFirstEpoch:
    def __init__(self):
        self.trainer = None

    def on_epoch_end(self, record):
        self.trainer.request_stop()


def test_stop_request_ends_cleanly_with_best_checkpoint(tiny_folders, tmp_path):
    stopper = StopAfterFirstEpoch()
    cfg = ExperimentConfig(data=str(tiny_folders), arch="mobilenet_v3_small", weights="none", freeze="none",
                           train=TrainConfig(epochs=5, batch_size=8), name="stopme")
    run_dir, result, _ = run_experiment(cfg, [stopper], runs_dir=tmp_path,
                                        on_trainer=lambda t: setattr(stopper, "trainer", t))
    assert result.stopped and len(result.history) == 1
    run = load_run(run_dir)
    assert run["summary"]["stopped"] and run["summary"]["best_epoch"] == 1
    assert (run_dir / "weights.safetensors").is_file()
    assert [r["name"] for r in list_runs(tmp_path)] == ["stopme"]


def test_device_auto_is_cpu_here():
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
