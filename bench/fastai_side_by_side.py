"""Side by side with fastai: ``learn.fine_tune(2, freeze_epochs=1)`` against our
``--schedule fine_tune --freeze-epochs 1 --epochs 3`` (a script, not a test).

What it measures, for each implementation, on ants/bees with MobileNetV2 (ImageNet
weights), batch size 32, for each of ``--seeds`` (default 0), on this machine's CPU:

  valid accuracy after each of the 3 epochs (1 head-only + 2 unfrozen), the last and the best,
  wall seconds from building the data loaders to the end of training (model build
  included), seconds per epoch, and the speed ratio fastai seconds / ours seconds.

Why: our ``fine_tune`` schedule copies fastai's recipe (one-cycle head epoch with
pct_start 0.99, then unfreeze at half the rate with discriminative rates).  This shows
whether a user loses accuracy or time by using ours instead of the original.

Each side runs in its own subprocess, so imports, memory and thread pools do not leak
from one to the other and the order of the runs does not matter.

fastai side, as a user would write it, with these choices:
* ``vision_learner(dls, models.mobilenet_v2)``, so fastai's own head (concat pooling,
  BatchNorm, 512 hidden units, dropout) and its body/head split are used.  MobileNetV2 is
  not in fastai's ``model_meta``, and ``vision_learner(..., cut=-1)`` does not help: it
  never forwards ``cut`` (fastai issue #4027; the automatic cut raises StopIteration on
  MobileNetV2).  So we register the arch in ``model_meta``, which is how fastai expects
  a new arch to be added: cut -1 (body = ``features``), ``default_split`` (body, head),
  ImageNet stats, and the IMAGENET1K_V1 weights.  ``DEFAULT`` would request V2, which is
  not in the offline cache.  torchvision loads those weights from
  ``$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth``, the same file ours uses.
* Transforms equal to ours.  Train: fastai's ``RandomResizedCrop(224)``, the same
  algorithm as torchvision's (scale 0.08-1, ratio 3/4-4/3), plus ``FlipItem(0.5)``.  Valid:
  torchvision's Resize(256)+CenterCrop(224).  fastai's own validation path would squash
  the whole image to 256x256 and ignore the aspect ratio.  ImageNet normalisation is
  applied per batch.
* Defaults everywhere else: Adam, base_lr 2e-3, wd 0.01, ``train_bn=True`` (the
  BatchNorm layers keep training while the body is frozen).
Ours differs in its head (a single Linear), its optimiser (the CLI's SGD, lr 1e-3) and a
frozen epoch that runs on cached features.  Those differences are the point: we compare
out-of-the-box usage, not identical maths.  ``--ours-extra "--optimizer adamw --lr 0.002
--weight-decay 0.01"`` gives ours fastai's optimiser, to separate recipe from defaults.

fastai's loader uses num_workers=0 by default here.  On the 2-core machine, 2 workers cost
more CPU (the children decode while both torch threads already use the cores) and were
slower on the wall clock too (``--workers 2`` to re-check).  Other jobs on a small machine
distort wall seconds, so each run also reports its own CPU seconds and how much CPU
*other* processes used meanwhile, and is flagged "contended" when that exceeds 10 % of a
core.

    python bench/fastai_side_by_side.py [--data DIR] [--seeds 0 1 2] [--skip-ours] [--skip-fastai]
                                        [--workers N] [--ours-plain] [--ours-extra ARGS]
"""
# No `from __future__ import annotations`: fastai dispatches on the real PILImage
# annotation of ValidResizeCrop.encodes, and cannot resolve a string one.
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # core, for the recipe
SHARED = ROOT.parent / "shared"
OUT_JSON = Path(__file__).with_name("fastai_side_by_side.json")
FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2")
EPOCHS, FREEZE_EPOCHS, BS = 3, 1, 32   # fine_tune(2, freeze_epochs=1) = 3 epochs
SEEDS = (0,)  # --seeds 0 1 2: the acceptance is over three
DEFAULT_WORKERS = 0  # num_workers=0 measured faster than 2 on the 2-core machine (see report)


def cpu_facts() -> dict:
    """The project's CPU facts (core/device.py), in this script's JSON shape."""
    import torch
    from core.device import cpu_facts as facts
    f = facts()
    return {"model": f["model"], "flags": {k: bool(f.get(k)) for k in FLAGS}, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def busy_cpu_s() -> float:
    "CPU seconds all processes have spent busy since boot (/proc/stat), to detect contention."
    try:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return float("nan")


def measured(fn, *args) -> dict:
    """Runs ``fn`` (which starts one subprocess) and adds how much CPU that child used and
    how much *other* processes used meanwhile: on 2 cores a concurrent job can distort the
    wall seconds a lot, and the report should say so rather than hide it."""
    ru0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_s(), time.perf_counter()
    r = fn(*args)
    ru1, busy1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_s(), time.perf_counter() - t0
    child = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    other = max(0.0, busy1 - busy0 - child)
    r.update(child_cpu_s=round(child, 1), other_cpu_s=round(other, 1), process_wall_s=round(wall, 1),
             contended=other > 0.1 * wall)  # others took >10 % of one core: the seconds are suspect
    if r["contended"]:
        print(f"WARNING: other processes used {other:.0f} CPU-s during this {wall:.0f} s run: "
              "its seconds are not clean", flush=True)
    return r


def fastai_child(data: str, workers: int, seed: int) -> dict:
    """Runs inside its own process; returns the measured dict (printed as the last line)."""
    from fastai.vision.all import (FlipItem, ImageDataLoaders, Normalize, PILImage, RandomResizedCrop,
                                   Transform, accuracy, default_split, imagenet_stats, models, set_seed)
    from fastai.callback.core import Callback
    from fastai.vision.learner import model_meta, vision_learner
    from torchvision import transforms as T

    class ValidResizeCrop(Transform):
        "Validation only (split_idx 1): the exact Resize(256)+CenterCrop(224) of ours."
        split_idx, order = 1, 1
        tv = T.Compose([T.Resize(256), T.CenterCrop(224)])
        def encodes(self, x: PILImage): return PILImage(self.tv(x))

    class EpochLog(Callback):
        "Runs after the Recorder (order 50) so this epoch's metrics are already computed."
        order = 60
        def __init__(self): self.rows, self.t, self.c = [], None, None
        def before_epoch(self): self.t, self.c = time.perf_counter(), time.process_time()
        def after_epoch(self):
            tl, vl, acc = self.recorder.values[-1]
            row = {"epoch": len(self.rows) + 1, "train_loss": tl, "val_loss": vl, "val_acc": float(acc),
                   "seconds": time.perf_counter() - self.t,
                   "cpu_s": time.process_time() - self.c}  # all threads; not worker processes
            self.rows.append(row)
            print(f"fastai epoch {row['epoch']}  val acc {row['val_acc']:.3f}  {row['seconds']:.1f}s", flush=True)

    model_meta[models.mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats,
                                       "weights": models.MobileNet_V2_Weights.IMAGENET1K_V1}
    set_seed(seed)  # seeds python, numpy and torch the way fastai users do
    t0 = time.perf_counter()
    dls = ImageDataLoaders.from_folder(
        data, train="train", valid="val", bs=BS, num_workers=workers,
        item_tfms=[RandomResizedCrop(224, split_idx=0), ValidResizeCrop(), FlipItem(0.5)],
        batch_tfms=[Normalize.from_stats(*imagenet_stats)])
    log = EpochLog()
    learn = vision_learner(dls, models.mobilenet_v2, metrics=accuracy, cbs=[log])
    with learn.no_bar(), learn.no_logging():  # progress bars would only slow the run and clutter the output
        learn.fine_tune(EPOCHS - FREEZE_EPOCHS, freeze_epochs=FREEZE_EPOCHS)  # base_lr defaults to 2e-3
    seconds = time.perf_counter() - t0
    import fastai
    return {"name": f"fastai {fastai.__version__}", "seed": seed, "epochs": len(log.rows), "per_epoch": log.rows,
            "best_val_acc": max(r["val_acc"] for r in log.rows), "seconds": seconds,
            "s_per_epoch": seconds / len(log.rows), "num_workers": workers,
            "num_train": len(dls.train_ds), "num_val": len(dls.valid_ds)}


def run_fastai(data: str, workers: int, seed: int) -> dict:
    env = {**os.environ, "TORCH_HOME": str(SHARED / "torch_home"), "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, __file__, "--_fastai-child", "--data", data, "--workers", str(workers),
                        "--seed", str(seed), "--epochs", str(EPOCHS)],
                       env=env, capture_output=True, text=True, cwd=ROOT)
    sys.stdout.write("".join(l + "\n" for l in p.stdout.splitlines() if l.startswith("fastai epoch")))
    if p.returncode != 0:
        return {"name": "fastai", "seed": seed, "error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


EPOCH_LINE = re.compile(r"^epoch\s+(\d+)\s.*val loss \S+ acc ([\d.]+)\s.*?\s([\d.]+)s\s")


def run_ours(data: str, plain: bool, extra: str = "", seed: int = 0) -> dict:
    # Ours as the dashboard's transfer-vs-scratch runs it: the fine-tune recipe, as CLI flags.
    from core.training.schedules import FINE_TUNE_RECIPE
    recipe = {**FINE_TUNE_RECIPE, "freeze_epochs": FREEZE_EPOCHS}
    schedule = [] if plain else [a for k, v in recipe.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    with tempfile.TemporaryDirectory() as runs:  # keep the repository's runs/ clean
        cmd = [sys.executable, "-m", "core", "train", data, "--arch", "mobilenet_v2", "--weights", "imagenet",
               "--freeze", "none", "--epochs", str(EPOCHS), *schedule, "--batch-size", str(BS),
               "--seed", str(seed), "--runs-dir", runs, *extra.split()]
        env = {**os.environ, "TORCH_HOME": str(SHARED / "torch_home")}
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    name = ("ours (no --schedule: NOT comparable)" if plain else "ours") + (f" [{extra}]" if extra else "")
    if p.returncode != 0:
        # The --schedule/--freeze-epochs flags are new: an older CLI rejects them in argparse.
        bad = next((l for l in p.stderr.splitlines() if "unrecognized arguments" in l), "")
        if not plain and ("--schedule" in bad or "--freeze-epochs" in bad):
            return {"name": name, "error": "not available yet (flags missing)"}
        return {"name": name, "seed": seed, "error": (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]}
    lines = p.stdout.strip().splitlines()
    summary = json.loads(next(l for l in reversed(lines) if l.startswith("{")))
    rows = [{"epoch": int(m[1]), "val_acc": float(m[2]), "seconds": float(m[3])}
            for m in map(EPOCH_LINE.match, lines) if m]
    for r in rows:
        print(f"ours   epoch {r['epoch']}  val acc {r['val_acc']:.3f}  {r['seconds']:.1f}s", flush=True)
    return {"name": name, "seed": seed, "epochs": summary.get("epochs", len(rows)), "per_epoch": rows,
            "best_val_acc": summary["best_val_acc"], "seconds": summary["seconds"],
            "s_per_epoch": summary["seconds"] / summary.get("epochs", len(rows) or 1),
            "path": summary.get("path"), "command": " ".join(cmd[1:])}


def table(cpu: dict, results: list[dict]) -> str:
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
    out = [f"CPU: {cpu['model']} ({cpu['cores']} cores, torch {cpu['torch']}, {cpu['torch_threads']} threads; {flags})",
           "", "| implementation | seed | epochs | val acc per epoch | final | best | seconds total | s/epoch | "
           "speed ratio (fastai s / ours s) | CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            out.append(f"| {r['name']} | {r.get('seed', '-')} | - | - | - | - | - | - | {r['error']} | - |")
            continue
        same_seed = {("fastai" if o["name"].startswith("fastai") else "ours"): o for o in results
                     if o.get("seed") == r.get("seed") and "error" not in o}
        ratio = same_seed["fastai"]["seconds"] / same_seed["ours"]["seconds"] if len(same_seed) == 2 else None
        accs = ", ".join(f"{e['val_acc']:.3f}" for e in r["per_epoch"])
        final = f"{r['per_epoch'][-1]['val_acc']:.3f}" if r["per_epoch"] else "-"
        spe = f"{r['s_per_epoch']:.1f}" if r.get("s_per_epoch") is not None else "-"
        out.append(f"| {r['name']} | {r.get('seed', '-')} | {r['epochs']} | {accs} | {final} | {r['best_val_acc']:.3f} | "
                   f"{r['seconds']:.1f}{' (contended!)' if r.get('contended') else ''} | {spe} | "
                   f"{f'{ratio:.2f}' if ratio else '-'} | {r.get('child_cpu_s', '-')} |")
    out.append("\ns/epoch: seconds total / epochs (ours caches features before its first epoch, so its own "
               "epoch lines under-count; each epoch's own seconds are in the JSON).")
    out.append("CPU s: CPU time of the whole subprocess (imports included), which concurrent jobs distort "
               "less than wall seconds.")
    return "\n".join(out)


def main(argv=None) -> int:
    global EPOCHS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "datasets" / "hymenoptera_data"))
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-fastai", action="store_true")
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="fastai DataLoader num_workers")
    ap.add_argument("--ours-plain", action="store_true",
                    help="run ours without --schedule/--freeze-epochs (plumbing check only, not comparable)")
    ap.add_argument("--ours-extra", default="", metavar="ARGS",
                    help='more CLI flags for ours, e.g. "--optimizer adamw --lr 0.002 --weight-decay 0.01" (fastai\'s recipe)')
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--epochs", type=int, default=EPOCHS,
                    help="epochs in all, the first head-only: fastai's fine_tune(epochs - 1, freeze_epochs=1)")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # the fastai child's
    ap.add_argument("--json", default=str(OUT_JSON))
    ap.add_argument("--_fastai-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    EPOCHS = a.epochs  # read by both sides (and passed on to the fastai child)
    if a._fastai_child:
        print(json.dumps(fastai_child(a.data, a.workers, a.seed)))
        return 0

    cpu = cpu_facts()
    print(f"CPU: {cpu['model']}  " + "  ".join(f"{f}={'yes' if v else 'no'}" for f, v in cpu["flags"].items())
          + f"  torch threads={cpu['torch_threads']}", flush=True)
    results = []
    for seed in a.seeds:
        if not a.skip_fastai:
            results.append(measured(run_fastai, a.data, a.workers, seed))
        if not a.skip_ours:
            results.append(measured(run_ours, a.data, a.ours_plain, a.ours_extra, seed))
    print()
    print(table(cpu, results))
    Path(a.json).write_text(json.dumps({"cpu": cpu, "data": a.data, "bs": BS, "seeds": a.seeds, "epochs": EPOCHS,
                                        "results": results}, indent=2) + "\n")
    print(f"\nwrote {a.json}")
    return 0 if results and all("error" not in r or r["error"].startswith("not available") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
