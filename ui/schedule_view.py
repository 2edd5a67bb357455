"""Schedules in words: the Train page's caption for the current setup, the transfer-vs-
scratch recipe, and the Compare page's schedule column and phase table.

Texts are built from ``core.training.schedules`` (``describe``, ``FINE_TUNE_RECIPE``),
never from numbers copied here, so they stay true when the recipe changes.
"""
from __future__ import annotations

from core.training.schedules import FINE_TUNE_RECIPE, RATE_FIELDS, describe
from core.training.trainer import TrainConfig

from .lr_finder import lr_text

# Short: a select box shows about 25 characters; the help texts say the rest.
SCHEDULE_LABELS = {"standard": "standard (tutorial)", "fine_tune": "fine_tune (fastai)", "gradual": "gradual (ULMFiT)"}
SCHEDULER_LABELS = {"step": "step (tutorial)", "cosine": "cosine", "none": "none (constant)",
                    "onecycle": "one-cycle", "warmup_cosine": "cosine with warm-up"}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def scheduler_used(cfg) -> bool:
    """The Scheduler input matters: only the standard schedule reads it (``schedules.plan``);
    fine_tune and gradual run one-cycle in every phase, their single one included."""
    return cfg.schedule == "standard"


def caption(cfg, freeze, freeze_words: str) -> str:
    """What the current schedule will do with the Model page's freeze, in one line."""
    text = describe(cfg, freeze)
    if cfg.schedule == "standard":
        return f"One phase with the Model page's freeze ({freeze_words}), {text}."
    if freeze == "backbone":
        return (f"**{cfg.schedule}** has nothing to unfreeze while the Model page freezes the whole body (feature "
                f"extractor): the head trains alone for all {cfg.epochs} epochs, under one-cycle. Choose *Fine-tune everything* "
                "(or fewer frozen stages) on the Model page to see it unfreeze.")
    if cfg.epochs < 2:
        return (f"**{cfg.schedule}** needs 2 or more epochs (head-only first, then unfrozen): with 1 epoch it trains "
                f"in one phase, under one-cycle.")
    return f"{text}; the body then trains as the Model page allows ({freeze_words})."


def recipe_gap(cfg: TrainConfig, freeze, weights: str) -> str | None:
    """Why the fine-tune recipe would serve this setup better, or None.  The walk found a
    newcomer trap: freeze part of the body, keep the tutorial's 0.001, and fine_tune's
    head-only epoch (a few steps under one-cycle) leaves the head at chance."""
    if cfg.schedule == "standard" or freeze == "backbone" or weights != "imagenet":
        return None
    r = FINE_TUNE_RECIPE
    if cfg.optimizer == r["optimizer"] and cfg.lr >= r["lr"] / 3:
        return None
    return (f"**{cfg.schedule}** at {OPTIMIZERS.get(cfg.optimizer, cfg.optimizer)} {lr_text(cfg.lr)} may leave the new "
            f"head near chance after its head-only epoch on a small dataset (few steps). The recipe measured on real "
            f"photos here: {OPTIMIZERS.get(r['optimizer'], r['optimizer'])} {lr_text(r['lr'])}, then ÷{r['unfreeze_div']:g} "
            f"once unfrozen, ÷{r['lr_spread']:g} toward the input. Or find a learning rate below.")


# How the Train page names a rate field in a sentence.
RATE_WORDS = {"optimizer": "optimizer", "lr": "learning rate", "momentum": "momentum", "weight_decay": "weight decay",
              "freeze_epochs": "head-only epochs", "lr_spread": "rate spread", "unfreeze_div": "rate once unfrozen",
              "bn_stats": "BatchNorm statistics"}


def _rate_value(k: str, v) -> str:
    return lr_text(v) if k == "lr" else f"÷{v:g}" if k == "unfreeze_div" else OPTIMIZERS.get(v, v) if k == "optimizer" \
        else f"{v:g}" if isinstance(v, (int, float)) else str(v)


def rates_note(cfg: TrainConfig, edited) -> str | None:
    """Under fine_tune: which rates its recipe set (where they differ from the tutorial's) and
    which are the user's own, so a value that changed with the schedule is no surprise."""
    if cfg.schedule != "fine_tune":
        return None
    defaults, values = TrainConfig().to_dict(), cfg.to_dict()
    brought = [k for k in RATE_FIELDS if k not in edited and values[k] != defaults[k]]
    mine = [k for k in RATE_FIELDS if k in edited]
    if not brought and not mine:
        return None
    text = ("fine_tune brings its measured recipe's " + ", ".join(f"{RATE_WORDS[k]} {_rate_value(k, values[k])}"
                                                                for k in brought) + "." if brought else "")
    if mine:
        text += (" " if text else "") + "Yours, kept whatever the schedule: " + ", ".join(
            f"{RATE_WORDS[k]} {_rate_value(k, values[k])}" for k in mine) + "."
    return text


def recipe_text(epochs: int) -> str:
    """The transfer-vs-scratch experiment's three runs, the fine-tuned one's recipe spelled out."""
    r = {**TrainConfig().to_dict(), **FINE_TUNE_RECIPE}
    n, opt = r["freeze_epochs"], r["optimizer"]
    momentum = f" (momentum {r['momentum']:g})" if opt == "sgd" and r.get("momentum") else ""
    div = r.get("unfreeze_div", 2.0)
    text = (f"The fine-tuned run uses fastai's {r['schedule']} schedule with this project's recipe: {n} head-only "
            f"epoch{'s' * (n != 1)} at {OPTIMIZERS.get(opt, opt)} {lr_text(r['lr'])}{momentum}, then all layers at "
            f"÷{div:g} of it with discriminative rates (÷{r['lr_spread']:g} toward the input), one-cycle, weight decay "
            f"{r['weight_decay']:g}. The frozen run keeps your settings; the scratch run uses the standard schedule "
            "with your scheduler, and the optimizer and rate you set (else the tutorial's).")
    if epochs < n + 1:
        text += f" With {epochs} epoch{'s' * (epochs != 1)} there is no room for the unfreeze: set {n + 1} or more."
    return text


def run_schedule(config: dict) -> str:
    """A saved run's schedule: its own line, else described from its TrainConfig (runs saved
    before schedules existed were all 'standard'), else a dash."""
    text = config.get("schedule_text")
    if isinstance(text, str) and text:
        return text
    train = config.get("train")
    if not isinstance(train, dict):
        return "—"
    known = TrainConfig.__dataclass_fields__
    try:
        return describe(TrainConfig(**{k: v for k, v in train.items() if k in known}), config.get("freeze", "none"))
    except (TypeError, ValueError, KeyError, ZeroDivisionError):
        return "—"


def run_optimizer(config: dict) -> str:
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    opt, lr = train.get("optimizer"), train.get("lr")
    if not isinstance(opt, str):
        return "—"
    return f"{OPTIMIZERS.get(opt, opt)} {lr_text(lr)}" if isinstance(lr, (int, float)) and lr > 0 else OPTIMIZERS.get(opt, opt)


def _trains(freeze) -> str:
    if freeze is None:
        return "as the run's freeze allows"
    if freeze == "backbone":
        return "head only"
    if isinstance(freeze, int):
        return f"all but the first {freeze} stages"
    return str(freeze)


def phase_rows(summary: dict, base_freeze=None) -> list[dict]:
    """The phases a run went through (summary["phases"]), one row each; [] when absent.
    ``base_freeze`` is the run's own freeze (a phase with freeze None trains what it allows)."""
    phases = summary.get("phases")
    if not isinstance(phases, list):
        return []
    rows = []
    for p in phases:
        if not isinstance(p, dict):
            continue
        lr, spread = p.get("lr"), p.get("spread")
        rows.append({"phase": p.get("name"), "epochs": p.get("epochs"), "trains": _trains(p.get("freeze")),
                     "head lr (peak)": lr_text(lr) if isinstance(lr, (int, float)) and lr > 0 else "—",
                     "rates toward the input": f"÷{spread:g}" if isinstance(spread, (int, float)) and spread > 1 else "one rate",
                     "scheduler": SCHEDULER_LABELS.get(p.get("scheduler"), p.get("scheduler")),
                     "path": {"frozen-features": "cached features", "plain": "images through the network"}.get(p.get("path"), p.get("path")),
                     "micro-batch": str(p["micro_batch"]) if p.get("micro_batch") else "—"})
        if "bn_frozen" in p:  # runs saved before BatchNorm statistics could be kept lack it
            body_frozen = p.get("freeze") == "backbone" or (p.get("freeze") is None and base_freeze == "backbone")
            rows[-1]["BatchNorm statistics"] = ("fixed (frozen body)" if body_frozen else "kept" if p["bn_frozen"]
                                                else "updated")
    return rows


def last_accuracy(run: dict) -> float | None:
    """The last epoch's validation accuracy: the summary's, else the history's (runs saved
    before ``last_val_acc`` was recorded), else None."""
    v = run.get("summary", {}).get("last_val_acc")
    if isinstance(v, (int, float)):
        return v
    history = run.get("history")
    last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else {}
    v = last.get("val_acc")
    return v if isinstance(v, (int, float)) else None


def head_only_best(run: dict) -> str | None:
    """A sentence when a run that unfroze its body kept a head-only epoch as its best: the
    saved "fine-tuned" model is then the frozen one.  None otherwise (or without history)."""
    history, best = run.get("history"), run.get("summary", {}).get("best_epoch")
    if not isinstance(history, list) or not isinstance(best, int) or not 1 <= best <= len(history):
        return None
    phases = [h.get("phase") if isinstance(h, dict) else None for h in history]
    if phases[best - 1] != "frozen" or all(p in (None, "frozen") for p in phases[best:]):
        return None
    later = [h["val_acc"] for h, p in zip(history[best:], phases[best:]) if p != "frozen" and "val_acc" in h]
    last = last_accuracy(run)
    return (f"The best epoch ({best}, {history[best - 1].get('val_acc', 0):.1%}) was a head-only one: the unfrozen "
            f"epochs did not improve on it (best of them {max(later):.1%}, last epoch {last:.1%}). The saved weights "
            "are that head-only epoch's.") if later and last is not None else None
