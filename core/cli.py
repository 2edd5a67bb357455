"""``python -m core``: train, predict, inspect, runs, bench, export, bundle, import-bundle, inside, audit.

Output is a contract other tools rely on: ``train`` ends with one JSON line, ``predict``
prints one JSON line per image, ``inspect`` and ``runs`` print one JSON object.  Bad
input exits 2 with one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from core.errors import ImageReadError, TransferLabError


def _freeze_arg(value: str):
    if value in ("backbone", "none") or value.isdigit():
        return int(value) if value.isdigit() else value
    return [v for v in value.split(",") if v]


class EpochPrinter:
    """Prints a line per epoch on stdout; the JSON summary line comes after them."""

    def on_run_start(self, info):
        print(f"training on {info['num_train']} images, validating on {info['num_val']} "
              f"({info['path']}{': ' + info['path_note'] if info['path_note'] else ''})", flush=True)

    def on_epoch_end(self, r):
        print(f"epoch {r['epoch']:>3}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.3f}  "
              f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.3f}  lr {r['lr']:.2g}  "
              f"{r['seconds']:.1f}s  {r['images_per_s']:.0f} img/s", flush=True)


def schedule_values(a) -> tuple[dict, list[str]]:
    """(values of the rate flags, those taken from the fine-tune recipe where it differs
    from the default).  The flags default to None, so "not typed" is told from "typed the
    default": a typed flag wins; under ``--schedule fine_tune`` an untyped one takes the
    recipe's value (``schedules.schedule_values``).  At the old default rate, 0.001, the
    head-only epoch left the head near chance and the best epoch reached 0.882 on ants/bees."""
    from core.training import schedules
    from core.training.train_config import TrainConfig
    typed = {k: getattr(a, k) for k in schedules.RATE_FIELDS if getattr(a, k) is not None}
    values, defaults = schedules.schedule_values(a.schedule, typed), TrainConfig().to_dict()
    return values, [k for k in schedules.RATE_FIELDS if k not in typed and values[k] != defaults[k]]


def _experiment(a):
    from core.training.experiment import ExperimentConfig
    from core.training.trainer import TrainConfig
    values, a.recipe_taken = schedule_values(a)
    tc = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, scheduler=a.scheduler, schedule=a.schedule,
                     micro_batch=a.micro_batch, label_smoothing=a.label_smoothing, seed=a.seed, amp=a.amp,
                     fast=not a.no_fast, feature_views=a.feature_views, **values)
    return ExperimentConfig(data=a.data, arch=a.arch, weights=a.weights, freeze=a.freeze, hidden=a.hidden,
                            dropout=a.dropout, val_split=a.val_split, device=a.device, name=getattr(a, "name", None),
                            sync_bn=a.sync_bn,
                            train=tc)


def cmd_train(a) -> int:
    # Under torchrun every process lands here; distributed.py joins them into one run.
    from core.training import distributed
    return distributed.run_command(a.device, lambda ranks, stop: _train(a, ranks, stop))


def _train(a, ranks, stop) -> int:
    from core.training.experiment import run_experiment
    cfg = _experiment(a)
    if a.recipe_taken and ranks.is_main:  # say which values were not the user's (stderr: stdout is the contract)
        print("fine_tune recipe: " + " ".join(f"--{k.replace('_', '-')} {getattr(cfg.train, k):g}"
                                              for k in a.recipe_taken) + " (a flag you type wins)", file=sys.stderr)
    run_dir, result, seconds = run_experiment(cfg, [EpochPrinter()] if ranks.is_main else [], runs_dir=a.runs_dir,
                                              ranks=ranks, stop=stop)
    if result.stopped and result.best_state is None:  # the ranks agreed: none has an epoch to keep
        if ranks.is_main:
            print("error: stopped before the first epoch was validated; no run was saved", file=sys.stderr)
        return 130
    if not ranks.is_main:
        return 0  # rank 0 alone prints: the output contract holds under torchrun
    if result.stopped:
        print(f"stopped after {len(result.history)} epoch(s): kept epoch {result.best_epoch} "
              f"(val acc {result.best_val_acc:.3f})", file=sys.stderr)
    from core.runs.store import load_run
    summary = load_run(run_dir)["summary"] if run_dir else {}
    print(json.dumps({"run_dir": str(run_dir) if run_dir else None, "best_val_acc": result.best_val_acc,
                      "best_epoch": result.best_epoch, "last_val_acc": summary.get("last_val_acc"),
                      "epochs": len(result.history), "seconds": round(seconds, 3),
                      "num_train": summary.get("num_train"), "num_val": summary.get("num_val"),
                      "skipped": summary.get("skipped"), "device": str(ranks.device) if ranks.active else
                      cfg.device if cfg.device != "auto" else _device_name(), "path": result.path,
                      "stopped": result.stopped}))
    return 0


def _device_name() -> str:
    from core.device import pick_device
    return str(pick_device("auto"))


def cmd_predict(a) -> int:
    """One JSON line per photo: {"image", "top": [{"label", "prob"}]} or {"image", "error"}.
    An argument may be a photo, a folder of photos or a .zip of them; predictions run on
    the run's checked ONNX export where there is one (core/serving/predict.py)."""
    from core.serving.batch_predict import classify, expand
    from core.serving.predict import Predictor
    p = Predictor(a.run_dir, a.device)
    ok = True
    for row in classify(p, expand(a.images), a.topk):
        ok &= "error" not in row
        out = {"image": row["file"], "error": row["error"]} if "error" in row else \
            {"image": row["file"], "top": [{"label": c, "prob": v} for c, v in row["topk"]]}
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0 if ok else 1


def cmd_inspect(a) -> int:
    from core.models.surgery import freeze, summarize
    from core.models.zoo import build_model
    built = build_model(a.arch, a.num_classes, a.weights or "none", a.hidden, a.dropout)
    freeze(built.model, a.arch, a.freeze)
    out = {**summarize(built.model, a.arch), "num_classes": a.num_classes, "transform": built.transform.to_dict()}
    if a.weights:
        out["weights"] = built.weights
        out["load_report"] = built.load_report.to_dict() if built.load_report else None
    print(json.dumps(out, ensure_ascii=False))
    return 0


def cmd_lr_find(a) -> int:
    from core.training.experiment import run_lr_find
    if not 0 < a.start < a.end:
        raise ValueError(f"--start {a.start:g} and --end {a.end:g}: need 0 < start < end")
    if a.iters < 3:
        raise ValueError(f"--iters {a.iters}: the sweep needs at least 3 steps")
    out = run_lr_find(_experiment(a), start=a.start, end=a.end, iters=a.iters)
    if out["suggestion"] is not None:
        print(f"suggested learning rate {out['suggestion']:.2g} ({out['method']}: {out['explanation']}); "
              f"steepest {out['steepest']:.2g}, minimum/10 {out['minimum_over_10']:.2g}; "
              f"{out['iters']} steps on {out['path']}, {out['seconds']:.1f}s", file=sys.stderr)
    print(json.dumps(out))
    return 0


def cmd_data_efficiency(a) -> int:
    """Best val accuracy against images per class, per arm: progress on stderr, one JSON line."""
    import time
    from core.data.datasets import scan_dataset
    from core.training import data_efficiency as de
    ns, arms = de.parse_ns(a.ns), de.parse_arms(a.arms)
    cfg = _experiment(a)
    sweep = de.plan(cfg, scan_dataset(cfg.data, cfg.val_split, cfg.train.seed), ns, a.seeds, arms, a.runs_dir,
                    repeat=not a.no_repeat)
    print(f"data-efficiency sweep {sweep.id}: {len(sweep.points)} runs ({', '.join(arms)}; n per class "
          f"{', '.join(map(str, sweep.ns))}; seeds {sweep.seeds})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    de.run_sweep(sweep, lambda p: [_PointPrinter(p, t0)])
    out = {"sweep": sweep.id, "summary": str(sweep.path), "status": sweep.status, "seconds": round(time.perf_counter() - t0, 3),
           "table": de.table(sweep.summary()), "ns": sweep.ns, "seeds": sweep.seeds, "dropped_ns": sweep.dropped_ns,
           "arm_seconds": {arm: round(sum(p.seconds for p in sweep.points if p.arm == arm), 3) for arm in arms},
           "feature_pass_seconds": round(sum(p.prep_seconds for p in sweep.points if p.arm == "frozen" and not p.feature_hits), 3),
           "runs": [p.run for p in sweep.points if p.run]}
    print(json.dumps(out))
    return 0 if sweep.status == "done" else 1


class _PointPrinter:
    def __init__(self, point, t0):
        self.point, self.t0 = point, t0

    def on_run_end(self, result):
        import time
        acc = f"best val {result.best_val_acc:.3f} (epoch {result.best_epoch})" if result.history else "nothing trained"
        print(f"{self.point.label}: {acc}, {len(self.point.samples)} images x{self.point.repeats}, {result.seconds:.1f}s "
              f"({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)


def cmd_runs(a) -> int:
    from core.runs.store import list_runs
    rows = [{"run_dir": r["dir"], "name": r["name"], "arch": r["config"].get("arch"), "weights": r["config"].get("weights"),
             "freeze": r["config"].get("freeze"), "best_val_acc": r["summary"].get("best_val_acc"),
             "best_epoch": r["summary"].get("best_epoch"), "seconds": r["summary"].get("seconds")}
            for r in list_runs(a.runs_dir)]
    print(json.dumps({"runs": rows}, ensure_ascii=False))
    return 0


def cmd_bench(a) -> int:
    from core.bench import main as bench_main
    return bench_main(a)


def build_parser() -> argparse.ArgumentParser:
    from core.paths import DEFAULT_RUNS_DIR
    ap = argparse.ArgumentParser(prog="python -m core", description="transferlab: transfer learning on images")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a dataset folder or .zip and save a run")
    _experiment_arguments(t)
    t.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR))
    t.add_argument("--name")
    t.set_defaults(fn=cmd_train)

    f = sub.add_parser("lr-find", help="sweep the learning rate and suggest one (prints the curve as JSON)")
    _experiment_arguments(f)
    f.add_argument("--start", type=float, default=1e-7)
    f.add_argument("--end", type=float, default=10.0)
    f.add_argument("--iters", type=int, default=100, help="optimiser steps in the sweep")
    f.set_defaults(fn=cmd_lr_find)

    d = sub.add_parser("data-efficiency", help="best val accuracy against images per class: pretrained frozen vs scratch")
    _experiment_arguments(d)  # the base setup; each arm sets its own weights and freeze (data_efficiency.py)
    d.add_argument("--ns", default="2,5,10,20,50,all", help="images per class, comma-separated ('all': the whole split)")
    d.add_argument("--seeds", type=int, default=2, help="subsets (and initialisations) per n")
    d.add_argument("--arms", default="frozen,scratch", help="frozen, scratch, fine_tune (comma-separated)")
    d.add_argument("--no-repeat", action="store_true", help="epochs over the subset alone (default: the subset repeated "
                                                            "to the whole split's size, same steps per point)")
    d.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR))
    d.set_defaults(fn=cmd_data_efficiency, epochs=5)
    return _other_commands(ap, sub)


def _experiment_arguments(t) -> None:
    from core.training.schedules import FINE_TUNE_RECIPE as r, SCHEDULERS, SCHEDULES
    from core.training.train_config import TrainConfig
    d = TrainConfig().to_dict()

    def defaults(k: str) -> str:  # the help's "default", and fine_tune's where the recipe differs
        text = f"default {d[k]:g}" if not isinstance(d[k], str) else f"default {d[k]}"
        if r.get(k, d[k]) != d[k]:
            text += f"; {r[k]:g} with --schedule fine_tune" if not isinstance(r[k], str) else f"; {r[k]} with --schedule fine_tune"
        return text
    t.add_argument("data")
    t.add_argument("--arch", default="mobilenet_v2")
    t.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to .pth/.pt/.safetensors")
    t.add_argument("--freeze", type=_freeze_arg, default="backbone", help="backbone | none | N | stage,names")
    t.add_argument("--hidden", type=int, default=0, help="units of an extra hidden layer in the head")
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    # Defaults None: see SCHEDULE_FIELDS.  Help texts name both defaults.
    t.add_argument("--lr", type=float, help=defaults("lr"))
    t.add_argument("--momentum", type=float, help=defaults("momentum"))
    t.add_argument("--weight-decay", type=float, help=defaults("weight_decay"))
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--optimizer", choices=["sgd", "adam", "adamw"],
                   help=defaults("optimizer") + f"; another than the fine_tune recipe's {r['optimizer']} keeps the "
                        "default --lr, --momentum and --weight-decay (the recipe's are its optimizer's)")
    t.add_argument("--scheduler", choices=SCHEDULERS, default="step", help="for the standard schedule")
    t.add_argument("--schedule", choices=SCHEDULES, default="standard",
                   help="fine_tune: head-only epochs, then unfreeze with discriminative rates under one-cycle, "
                        "at the measured recipe's values for the rate flags you do not type; "
                        "gradual: one more stage group per epoch")
    t.add_argument("--freeze-epochs", type=int, help="fine_tune: head-only epochs first; " + defaults("freeze_epochs"))
    t.add_argument("--lr-spread", type=float,
                   help="fine_tune/gradual: the first stage's rate is the head's divided by this; " + defaults("lr_spread"))
    t.add_argument("--unfreeze-div", type=float,
                   help="fine_tune/gradual: the unfrozen phases peak at --lr divided by this (fastai: 2); "
                        + defaults("unfreeze_div"))
    t.add_argument("--bn-stats", choices=["auto", "train", "frozen"],
                   help="BatchNorm statistics while the body trains (see TrainConfig.bn_stats); " + defaults("bn_stats"))
    t.add_argument("--micro-batch", type=int, default=0,
                   help="images per forward/backward (0: measured once per machine; the step stays at --batch-size)")
    t.add_argument("--val-split", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    t.add_argument("--amp", choices=["auto", "on", "off"], default="auto")
    t.add_argument("--feature-views", type=int, default=1, help="augmented views cached per image (frozen fast path)")
    t.add_argument("--no-fast", action="store_true", help="disable the fast paths (same results, slower)")
    t.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)")


def _other_commands(ap, sub) -> argparse.ArgumentParser:
    from core.paths import DEFAULT_RUNS_DIR
    p = sub.add_parser("predict", help="classify images with a saved run")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", help="photos, folders of photos or .zip files of photos")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=cmd_predict)

    i = sub.add_parser("inspect", help="show a model's head, stages and parameter counts")
    i.add_argument("--arch", required=True)
    i.add_argument("--num-classes", type=int, default=2)
    i.add_argument("--freeze", type=_freeze_arg, default="none")
    i.add_argument("--weights", default=None, help="imagenet | none | PATH")
    i.add_argument("--hidden", type=int, default=0)
    i.add_argument("--dropout", type=float, default=0.0)
    i.set_defaults(fn=cmd_inspect)

    r = sub.add_parser("runs", help="list saved runs")
    r.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR))
    r.set_defaults(fn=cmd_runs)

    from core.serving.export_cli import add_export_commands
    add_export_commands(sub, str(DEFAULT_RUNS_DIR))

    from core.inside.cli import add_inside_command
    add_inside_command(sub)

    from core.audit.cli import add_audit_command
    add_audit_command(sub)

    b = sub.add_parser("bench", help="benchmark the trainer against the PyTorch tutorial loop")
    from core.bench import add_arguments
    add_arguments(b)
    b.set_defaults(fn=cmd_bench)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (TransferLabError, ValueError) as e:
        # An image error's text is the reason alone (see ImageReadError): name the file here.
        named = f"{e.name}: " if isinstance(e, ImageReadError) and e.name else ""
        # One line, always: a library's message quoted inside ours may carry newlines.
        print("error: " + named + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
