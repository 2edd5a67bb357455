"""Training schedules: what trains when, at which rate.

A schedule is a list of *phases*.  Each phase fixes what is frozen, builds a fresh
optimiser over what trains (one parameter group per stage group, for discriminative
rates) and runs a learning-rate scheduler over its own epochs.

* ``standard``: one phase, the experiment's freeze, the chosen scheduler (the PyTorch
  tutorial's StepLR by default).
* ``fine_tune`` (fastai's ``fine_tune``): ``freeze_epochs`` epochs training the head
  alone under one-cycle with a long warm-up (pct_start 0.99), then everything the
  experiment leaves trainable with *discriminative* rates (the head at
  ``lr / unfreeze_div``, fastai's halving by default, the first stage ``lr_spread`` times
  lower, geometric in between) under one-cycle, BatchNorm keeping the statistics the
  head learnt with (``bn_stats``).  The head-only epochs take the frozen fast path (cached features); the
  trainer switches to full forward/backward at the unfreeze.
* ``gradual`` (ULMFiT's gradual unfreezing): epoch 1 trains the head, each later epoch
  unfreezes one more stage group from the top, with the same discriminative rates.

Per-step schedulers (``onecycle``, ``warmup_cosine``) advance after every optimiser
step; per-epoch ones (``step``, ``cosine``) after every epoch.  A new phase starts a
new optimiser: momentum buffers of the head do not carry across an unfreeze (fastai
keeps them; the difference is one epoch's momentum, and it keeps phases independent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from core.models.surgery import head_paths, stages_of
from core.training.train_config import TrainConfig

SCHEDULES = ("standard", "fine_tune", "gradual")

# What the transfer-vs-scratch experiment's fine-tuned run uses whatever the tab's own
# settings (TrainConfig field overrides).  Chosen on real photos, 3 epochs of ants/bees and
# 5 of Fashion-MNIST (tests/test_fine_tune.py), batch 32, 3 seeds, 2-core AVX2 CPU:
# * SGD at 0.03 for the head-only epoch: at 0.001 (the tutorial's rate) 8 steps leave the
#   head at chance (0.51); fastai's Adam 2e-3 reaches 0.82, SGD 0.03 0.97 on ants/bees;
# * the unfrozen phase peaks at lr / 25.  At lr / 5 the unfrozen epochs *lost* accuracy:
#   ants/bees 0.967 -> 0.895 (seed 0), 0.902 -> 0.556 mid-phase (seed 1), and with a
#   head trained two epochs first every seed collapsed to chance (train accuracy 0.49).
#   The cause is the rate at which the top stages move under kept BatchNorm statistics:
#   MobileNetV2's top depthwise BatchNorms have running variances under 1e-3 in nearly
#   every channel (scales gamma/sqrt(var) up to 107), so with the statistics fixed each SGD
#   step on those kernels reaches the features amplified and nothing renormalises them.
#   At lr / 25 no run collapses (the same two-epoch head: 0.948 / 0.941 / 0.915 at the
#   end), the three 3-epoch runs end at 0.961 / 0.948 / 0.954 (head-only 0.967 / 0.902 /
#   0.895), and Fashion-MNIST ends at 0.76 / 0.82 / 0.77 (0.76 / 0.80 / 0.80 at lr / 5);
# * BatchNorm statistics kept after the head-only phase (bn_stats "auto"): batch statistics
#   (fastai's way, "train") end Fashion-MNIST at 0.66 / 0.72 / 0.68 -- the head learnt on
#   features normalised with ImageNet's statistics, and the switch moves them under it (so
#   does re-estimating the statistics on the photos first: 0.70 / 0.69 / 0.71).
FINE_TUNE_RECIPE = {"schedule": "fine_tune", "freeze_epochs": 1, "optimizer": "sgd", "lr": 0.03, "momentum": 0.9,
                    "unfreeze_div": 25.0, "lr_spread": 100.0, "weight_decay": 0.0, "bn_stats": "auto"}
# The TrainConfig fields a schedule brings its own values for: fine_tune the recipe's, the
# others TrainConfig's (the tutorial's).  The CLI's flags and the Train page's inputs that the
# user did not set follow the schedule (``schedule_values``); what the user set stays.
RATE_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "freeze_epochs", "lr_spread", "unfreeze_div", "bn_stats")
# The recipe's values that belong to its optimizer: with another, its SGD rate would be wrong.
OPTIMIZER_BOUND = ("lr", "momentum", "weight_decay")
SCHEDULERS = ("step", "cosine", "none", "onecycle", "warmup_cosine")
PER_STEP = ("onecycle", "warmup_cosine")


@dataclass
class Phase:
    name: str              # shown in the history: "train", "frozen", "unfrozen", "unfreeze 2/7"
    epochs: int
    freeze: object         # a surgery.freeze strategy for the phase (never trains what the
                           # experiment froze), or None: the experiment's own freeze
    lr: float              # the top group's peak rate (the head's)
    spread: float = 1.0    # first stage's rate = lr / spread; 1: one rate for all
    scheduler: str = "step"
    pct_start: float = 0.25  # one-cycle: share of steps rising to the peak; warmup_cosine: warm-up share
    bn_frozen: bool = False  # BatchNorm keeps its running statistics (surgery.keep_bn_statistics)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan(cfg, base_freeze, num_stages: int) -> list[Phase]:
    """The phases of ``cfg`` (a TrainConfig) for a model with ``num_stages`` body stages
    whose experiment-level freeze is ``base_freeze``."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}: use {', '.join(SCHEDULES)}")
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}: use {', '.join(SCHEDULERS)}")
    if isinstance(base_freeze, str) and base_freeze.strip().isdigit():
        base_freeze = int(base_freeze)
    if cfg.schedule == "standard":
        return [Phase("train", cfg.epochs, None, cfg.lr, 1.0, cfg.scheduler, cfg.pct_start, cfg.bn_stats == "frozen")]
    if base_freeze == "backbone" or cfg.epochs < 2:
        # Nothing to unfreeze (or no room for two phases): one phase under one-cycle, fastai's
        # fit_one_cycle, whatever ``scheduler`` says (it is the standard schedule's).  On the
        # dashboard's default (head only, 5 epochs, lr 0.03) the tutorial's StepLR kept the rate
        # at its peak from the first step: val loss 2.5 after epoch 1 (seed 0), and 5 seeds ended
        # Fashion-MNIST at 0.69 on average against 0.77 under one-cycle (ants/bees 0.945 / 0.946).
        return [Phase("train", cfg.epochs, None, cfg.lr, 1.0, "onecycle", cfg.pct_start, cfg.bn_stats == "frozen")]
    # After a head-only phase, BatchNorm keeps the statistics the head learnt with ("auto").
    keep = cfg.bn_stats in ("auto", "frozen")
    if cfg.schedule == "fine_tune":
        frozen = min(max(1, cfg.freeze_epochs), cfg.epochs - 1)
        return [Phase("frozen", frozen, "backbone", cfg.lr, 1.0, "onecycle", 0.99),
                Phase("unfrozen", cfg.epochs - frozen, None, cfg.lr / cfg.unfreeze_div, cfg.lr_spread, "onecycle",
                      cfg.pct_start, keep)]
    # gradual: the first phase trains the head; then one more stage group per epoch from the top.
    first_trainable = base_freeze if isinstance(base_freeze, int) else 0
    phases = [Phase("frozen", 1, "backbone", cfg.lr, 1.0, "onecycle", 0.99)]
    frozen_stages = num_stages
    for e in range(2, cfg.epochs + 1):
        frozen_stages = max(first_trainable, frozen_stages - 1)
        last = e == cfg.epochs or frozen_stages == first_trainable
        phases.append(Phase(f"unfreeze {num_stages - frozen_stages}/{num_stages - first_trainable}",
                            cfg.epochs - e + 1 if last else 1, frozen_stages or None,
                            cfg.lr / cfg.unfreeze_div, cfg.lr_spread, "onecycle", cfg.pct_start, keep))
        if last:
            break
    return phases


def schedule_values(schedule: str, chosen: dict) -> dict:
    """Every ``RATE_FIELDS`` value for ``schedule``: the user's own (``chosen``) as they are,
    the others the fine-tune recipe's under ``fine_tune`` (bar its optimizer's rates when the
    user chose another optimizer), else TrainConfig's defaults."""
    defaults = TrainConfig().to_dict()
    recipe = FINE_TUNE_RECIPE if schedule == "fine_tune" else {}
    other_optimizer = chosen.get("optimizer", recipe.get("optimizer")) != recipe.get("optimizer")
    return {k: chosen[k] if k in chosen else
            recipe[k] if k in recipe and not (other_optimizer and k in OPTIMIZER_BOUND) else defaults[k]
            for k in RATE_FIELDS}


def stage_groups(model: nn.Module, arch: str) -> list[list[nn.Parameter]]:
    """Trainable parameters grouped from the input to the head: one group per body stage
    (from the family table), then the head(s).  Parameters in neither (a ViT's class token,
    say) join the first group: they sit at the input."""
    heads = head_paths(model, arch)
    named = dict(model.named_parameters())
    taken: set[str] = set()

    def under(paths):
        names = [n for n in named if n not in taken and any(n == p or n.startswith(p + ".") for p in paths)]
        taken.update(names)
        return names

    head_names = under(heads)
    groups = [under(paths) for _, paths in stages_of(model, arch)]
    rest = [n for n in named if n not in taken]
    if groups:
        groups[0] = rest + groups[0]
    else:
        groups = [rest]
    groups.append(head_names)
    return [[named[n] for n in g if named[n].requires_grad] for g in groups]


def discriminative_groups(model: nn.Module, arch: str, lr: float, spread: float) -> list[dict]:
    """Optimiser parameter groups: the head at ``lr``, the first stage at ``lr / spread``,
    geometric in between (fastai's ``slice(lr / spread, lr)``).  Empty groups are dropped."""
    groups = stage_groups(model, arch)
    n = len(groups)
    out = []
    for k, params in enumerate(groups):
        if params:
            rate = lr if spread <= 1 or n == 1 else lr / spread ** ((n - 1 - k) / (n - 1))
            out.append({"params": params, "lr": rate, "group": k})
    return out


def make_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use sgd, adam or adamw")


def make_scheduler(opt: torch.optim.Optimizer, phase: Phase, cfg, steps_per_epoch: int):
    """The phase's scheduler, or None.  Per-step ones span the phase's optimiser steps."""
    total = max(1, phase.epochs * steps_per_epoch)
    if phase.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if phase.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, phase.epochs))
    if phase.scheduler == "none":
        return None
    if phase.scheduler == "onecycle":
        # Peak at each group's own rate; starts at peak/25 and ends near zero, as fastai.
        # Momentum cycles inversely (0.95 -> 0.85 -> 0.95) where the optimiser has one.
        has_momentum = cfg.optimizer != "sgd" or cfg.momentum > 0
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=phase.pct_start,
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1e5, cycle_momentum=has_momentum)
    if phase.scheduler == "warmup_cosine":
        warm = max(1, round(phase.pct_start * total))
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total))
    raise ValueError(f"unknown scheduler {phase.scheduler!r}: use {', '.join(SCHEDULERS)}")


def warmup_cosine(step: int, warm: int, total: int) -> float:
    """Multiplier of the peak rate: linear from 1/warm up to 1 over ``warm`` steps, then
    cosine down to 0 at ``total``."""
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def describe(cfg, base_freeze="none") -> str:
    """One line for pages and the Compare table: what the schedule does."""
    if cfg.schedule == "fine_tune" and base_freeze != "backbone" and cfg.epochs >= 2:
        frozen = min(max(1, cfg.freeze_epochs), cfg.epochs - 1)
        return (f"fine_tune: {frozen} head-only epoch{'s' * (frozen > 1)}, then {cfg.epochs - frozen} unfrozen "
                f"(one-cycle, rates ÷{cfg.lr_spread:g} toward the input)")
    if cfg.schedule == "gradual" and base_freeze != "backbone" and cfg.epochs >= 2:
        return f"gradual unfreezing: one more stage group per epoch (one-cycle, rates ÷{cfg.lr_spread:g} toward the input)"
    if cfg.schedule in ("fine_tune", "gradual"):
        return f"{cfg.schedule}: nothing to unfreeze, one-cycle"
    names = {"step": f"StepLR ×{cfg.gamma:g} every {cfg.step_size}", "cosine": "cosine", "none": "constant rate",
             "onecycle": "one-cycle", "warmup_cosine": "cosine with warm-up"}
    return names.get(cfg.scheduler, cfg.scheduler)
