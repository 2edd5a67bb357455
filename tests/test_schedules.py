"""Schedules, discriminative rates, micro-batches and the LR finder: unit level, on tiny
images (the real-photo accuracy targets are in test_fine_tune.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from core.data.datasets import scan_dataset
from core.device import pick_device
from core.models.surgery import freeze, stages_of
from core.models.zoo import build_model
from core.training import micro_batch, schedules
from core.training.lr_finder import find_lr, valley
from core.training.trainer import TrainConfig, Trainer


def test_plan_fine_tune_is_head_first_then_the_experiments_own_freeze():
    cfg = TrainConfig(epochs=3, schedule="fine_tune", lr=0.002)
    frozen, unfrozen = schedules.plan(cfg, "none", 7)
    assert (frozen.name, frozen.epochs, frozen.freeze, frozen.lr, frozen.scheduler) == ("frozen", 1, "backbone", 0.002, "onecycle")
    assert (unfrozen.epochs, unfrozen.freeze, unfrozen.lr, unfrozen.spread) == (2, None, 0.001, 100.0)
    assert unfrozen.bn_frozen and not frozen.bn_frozen
    assert not schedules.plan(TrainConfig(epochs=3, schedule="fine_tune", bn_stats="train"), "none", 7)[1].bn_frozen
    assert schedules.plan(TrainConfig(epochs=3, schedule="fine_tune", unfreeze_div=10, lr=0.03), "none", 7)[1].lr == 0.003
    # Nothing to unfreeze, or no room for two phases: one phase, under one-cycle whatever the
    # standard schedule's scheduler says (StepLR kept the head at its peak rate from step 1).
    assert [(p.name, p.scheduler) for p in schedules.plan(cfg, "backbone", 7)] == [("train", "onecycle")]
    assert [(p.name, p.scheduler) for p in schedules.plan(TrainConfig(epochs=1, schedule="fine_tune"), "none", 7)] \
        == [("train", "onecycle")]
    assert schedules.describe(cfg, "backbone") == "fine_tune: nothing to unfreeze, one-cycle"
    assert [p.scheduler for p in schedules.plan(TrainConfig(epochs=3), "backbone", 7)] == ["step"]  # standard: as set
    # freeze_epochs never swallows the whole run.
    assert [p.epochs for p in schedules.plan(TrainConfig(epochs=3, schedule="fine_tune", freeze_epochs=5), "none", 7)] == [2, 1]


def test_plan_gradual_unfreezes_one_stage_per_epoch_down_to_the_experiments_freeze():
    phases = schedules.plan(TrainConfig(epochs=5, schedule="gradual"), 2, 4)
    assert [p.freeze for p in phases] == ["backbone", 3, 2]
    assert [p.epochs for p in phases] == [1, 1, 3]
    phases = schedules.plan(TrainConfig(epochs=3, schedule="gradual"), "none", 6)
    assert [p.freeze for p in phases] == ["backbone", 5, 4] and sum(p.epochs for p in phases) == 3


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="fine_tune"):
        schedules.plan(TrainConfig(schedule="fit_one_cycle"), "none", 3)


def test_discriminative_rates_are_geometric_from_the_first_stage_to_the_head():
    model = build_model("mobilenet_v2", 2, "none").model
    groups = schedules.discriminative_groups(model, "mobilenet_v2", 0.01, 100.0)
    rates = [g["lr"] for g in groups]
    assert rates[-1] == pytest.approx(0.01) and rates[0] == pytest.approx(1e-4)
    ratios = [b / a for a, b in zip(rates, rates[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)  # one factor per step
    assert len(groups) == len(stages_of(model, "mobilenet_v2")) + 1
    # Every trainable parameter is in exactly one group.
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_frozen_stages_drop_out_of_the_groups():
    model = build_model("mobilenet_v2", 2, "none").model
    freeze(model, "mobilenet_v2", 3)
    groups = schedules.discriminative_groups(model, "mobilenet_v2", 0.01, 100.0)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_warmup_cosine_rises_then_falls_to_zero():
    values = [schedules.warmup_cosine(s, 10, 100) for s in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:])) and values[100] == pytest.approx(0.0)


def test_onecycle_peaks_at_each_groups_own_rate():
    model = build_model("mobilenet_v2", 2, "none").model
    cfg = TrainConfig(lr=0.01)
    opt = schedules.make_optimizer(schedules.discriminative_groups(model, "mobilenet_v2", 0.01, 100.0), cfg)
    phase = schedules.Phase("unfrozen", 2, None, 0.01, 100.0, "onecycle", 0.5)
    sched = schedules.make_scheduler(opt, phase, cfg, 5)
    peaks = [0.0] * len(opt.param_groups)
    for _ in range(10):
        peaks = [max(p, g["lr"]) for p, g in zip(peaks, opt.param_groups)]
        opt.step()
        sched.step()
    assert peaks[-1] == pytest.approx(0.01, rel=0.02) and peaks[0] == pytest.approx(1e-4, rel=0.02)


def _trainer(tiny_split, cfg, strategy="none", listeners=()):
    ds = scan_dataset(str(tiny_split), 0.2, 0)
    built = build_model("mobilenet_v2", len(ds.classes), "none", seed=0)
    freeze(built.model, "mobilenet_v2", strategy)
    return Trainer(built.model, "mobilenet_v2", ds.train, ds.val, built.transform, cfg, pick_device("cpu"),
                   list(listeners), freeze=strategy, feature_cache=None)


def test_micro_batches_give_the_whole_batchs_step(tiny_split):
    # BatchNorm frozen (eval) and no dropout: slicing must not change the step at all.
    def weights(micro):
        cfg = TrainConfig(epochs=1, batch_size=8, micro_batch=micro, fast=False, scheduler="none", feature_cache=False)
        t = _trainer(tiny_split, cfg, "backbone")
        r = t.fit()
        assert r.micro_batch == micro
        return r.best_state
    a, b = weights(8), weights(2)
    head = [k for k in a if k.startswith("classifier.1")]
    assert head and all(torch.allclose(a[k], b[k], atol=1e-6) for k in head)


def test_fine_tune_runs_head_first_on_cached_features_then_everything(tiny_split):
    events = []

    class Listen:
        def on_phase_start(self, info):
            events.append(info)
    cfg = TrainConfig(epochs=3, batch_size=8, schedule="fine_tune", lr=0.01, micro_batch=4, feature_cache=False)
    t = _trainer(tiny_split, cfg, "none", [Listen()])
    stats = {k: v.clone() for k, v in t.model.state_dict().items() if "running_" in k}
    r = t.fit()
    assert [h["phase"] for h in r.history] == ["frozen", "unfrozen", "unfrozen"]
    assert [h["path"] for h in r.history] == ["frozen-features", "plain", "plain"]
    assert r.path == "frozen-features, then plain"
    assert [p["name"] for p in r.phases] == ["frozen", "unfrozen"] and r.phases[1]["micro_batch"] == 4
    assert events == [{"phase": "unfrozen", "path": "plain", "epoch": 2}]
    assert all(p.requires_grad for p in t.model.parameters())  # the experiment's freeze is back
    # bn_stats "auto": after the head-only phase BatchNorm keeps the statistics the head learnt with.
    assert r.phases[1]["bn_frozen"]
    assert all(torch.equal(v, t.model.state_dict()[k]) and torch.equal(v, r.best_state[k]) for k, v in stats.items())


def test_bn_stats_train_lets_batchnorm_statistics_move_after_the_unfreeze(tiny_split):
    cfg = TrainConfig(epochs=2, batch_size=8, schedule="fine_tune", lr=0.01, micro_batch=8, feature_cache=False,
                      bn_stats="train")
    t = _trainer(tiny_split, cfg, "none")
    stats = {k: v.clone() for k, v in t.model.state_dict().items() if "running_mean" in k}
    t.fit()
    assert any(not torch.equal(t.model.state_dict()[k], v) for k, v in stats.items())


def test_micro_batch_choice_is_measured_once_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_SPEED", str(tmp_path))
    calls = []
    monkeypatch.setattr(micro_batch, "_rate", lambda m, size, *a: calls.append(size) or {32: 10.0, 16: 20.0, 8: 15.0}[size])
    model = build_model("mobilenet_v2", 2, "none").model
    got = micro_batch.choose(model, torch.device("cpu"), 32, 224, 2, lambda: torch.autocast("cpu", enabled=False))
    assert got[0] == 16 and calls == [32, 16]  # never under MIN_MICRO (16): BatchNorm needs the images
    again = micro_batch.choose(model, torch.device("cpu"), 32, 224, 2, lambda: None)
    assert again[0] == 16 and calls == [32, 16]  # remembered: not measured again
    assert json.loads((tmp_path / "micro_batch.json").read_text())
    # Within noise of the whole batch: keep the whole batch.
    monkeypatch.setenv("TRANSFERLAB_SPEED", str(tmp_path / "other"))
    monkeypatch.setattr(micro_batch, "_rate", lambda m, size, *a: {32: 10.0, 16: 10.5}[size])
    assert micro_batch.choose(model, torch.device("cpu"), 32, 224, 2, lambda: None)[0] == 32
    assert micro_batch.choose(model, torch.device("cuda"), 32, 224, 2, lambda: None)[0] == 32  # GPUs: whole batch


def test_valley_sits_inside_the_longest_fall():
    losses = [1.0, 1.0, 0.9, 0.8, 0.6, 0.4, 0.3, 0.25, 0.3, 0.8, 3.0]
    k = valley(losses)
    assert 2 <= k <= 7


def test_lr_finder_restores_the_model_and_suggests_a_rate_in_the_sweep(tiny_split):
    cfg = TrainConfig(batch_size=4, schedule="fine_tune", feature_cache=False, micro_batch=4)
    t = _trainer(tiny_split, cfg, "none")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    out = find_lr(t, 1e-5, 1.0, iters=12)
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm buffers
    assert all(p.requires_grad for p in t.model.parameters())
    assert out["path"] == "frozen-features" and out["phase"] == "frozen"
    assert 3 <= out["iters"] <= 12 and len(out["lrs"]) == len(out["losses"]) == out["iters"]
    assert out["lrs"] == sorted(out["lrs"]) and out["lrs"][0] == pytest.approx(1e-5)
    assert out["suggestion"] is None or 1e-5 <= out["suggestion"] <= 1.0
    assert all(math.isfinite(x) for x in out["raw_losses"][:3])
