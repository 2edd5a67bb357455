"""``python -m core bench``: our trainer against the PyTorch tutorial loop, same data,
model, epochs and seed, at the CLI's defaults (batch 32, SGD lr 0.001 momentum 0.9,
StepLR 7).  Rows:

* frozen, finetune, scratch: the tutorial's three modes with the tutorial's
  hyperparameters on both sides (ours only changes *how* an epoch runs);
* fine_tune: our fine-tune schedule (``schedules.FINE_TUNE_RECIPE``: head-only epoch on
  cached features, then everything with discriminative rates under one-cycle) against
  the tutorial's fine-tuning loop over the same epochs.

The CPU's model and flags (AVX2, AVX-512, bf16, AMX) are printed beside the figures: the
same code is 1.5x apart between an AVX2 and an AVX-512 machine.

Each cell (implementation x mode) runs in a fresh subprocess so its peak memory is its
own.  Prints a markdown table and writes the same as JSON.

On a GPU both sides run on it (the tutorial moves its batches to the device, as written
there), timed regions end with ``torch.cuda.synchronize`` (CUDA runs asynchronously: an
unsynchronised clock times the queueing, not the work), and the peak memory is the GPU's
(``torch.cuda.max_memory_allocated``) beside the host's.
"""
from __future__ import annotations

import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

MODES = {"frozen": ("imagenet", "backbone"), "finetune": ("imagenet", "none"), "fine_tune": ("imagenet", "none"),
         "scratch": ("none", "none")}


def add_arguments(p) -> None:
    from core.paths import demo_dataset
    p.add_argument("--data", default=str(demo_dataset() or ""), help="dataset with train/ and val/ (default: ants/bees)")
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--modes", default="frozen,finetune,fine_tune,scratch")
    p.add_argument("--epochs-frozen", type=int, default=25)
    p.add_argument("--epochs-finetune", type=int, default=3)
    p.add_argument("--epochs-fine_tune", dest="epochs_fine_tune", type=int, default=3)
    p.add_argument("--epochs-scratch", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="the CLI's default (the tutorial uses 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--cell", help=argparse_hidden())  # one cell, run in a child process


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: the end of a timed region on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> dict:
    """Peak memory of this process: the host's (max RSS), and the GPU's on CUDA."""
    out = {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ---- the baseline: the classic tutorial loop, as written there ------------------------------
def baseline(data: str, arch: str, mode: str, epochs: int, batch_size: int, seed: int) -> dict:
    from torchvision import datasets, transforms
    from core.device import pick_device
    from core.models.surgery import freeze
    from core.models.zoo import build_model
    torch.manual_seed(seed)
    device = pick_device("auto")  # the device ours trains on: the tutorial's `device`
    weights, strategy = MODES[mode]  # fine_tune's baseline is the tutorial's fine-tuning loop
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tfs = {"train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                        transforms.ToTensor(), norm]),
           "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])}
    t0 = time.perf_counter()
    sets = {x: datasets.ImageFolder(str(Path(data) / x), tfs[x]) for x in ("train", "val")}
    loaders = {x: torch.utils.data.DataLoader(sets[x], batch_size=batch_size, shuffle=True, num_workers=4) for x in sets}
    model = build_model(arch, len(sets["train"].classes), weights, seed=seed).model.to(device)
    freeze(model, arch, strategy)
    criterion = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    best_acc, best_wts, epoch_secs = 0.0, copy.deepcopy(model.state_dict()), []
    for _ in range(epochs):
        te = time.perf_counter()
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            correct = 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                opt.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        opt.step()
                correct += (outputs.argmax(1) == labels).sum().item()
            if phase == "train":
                sched.step()
            acc = correct / len(sets[phase])
            if phase == "val" and acc > best_acc:
                best_acc, best_wts = acc, copy.deepcopy(model.state_dict())
        sync(device)
        epoch_secs.append(time.perf_counter() - te)
    model.load_state_dict(best_wts)  # as the tutorial ends
    sync(device)
    total = time.perf_counter() - t0
    return {"seconds": total, "s_per_epoch": total / epochs, "best_val_acc": best_acc,
            "images_per_s": len(sets["train"]) * epochs / sum(epoch_secs), "device": str(device)}


def ours(data: str, arch: str, mode: str, epochs: int, batch_size: int, seed: int) -> dict:
    from core.training.experiment import ExperimentConfig, run_experiment
    import tempfile

    from core.serving.predict import Predictor
    from core.runs.store import load_run
    from core.training.trainer import TrainConfig
    from .training.schedules import FINE_TUNE_RECIPE
    weights, strategy = MODES[mode]
    recipe = FINE_TUNE_RECIPE if mode == "fine_tune" else {}
    with tempfile.TemporaryDirectory() as runs:
        cfg = ExperimentConfig(data=data, arch=arch, weights=weights, freeze=strategy,
                               train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, **recipe))
        run_dir, result, seconds = run_experiment(cfg, runs_dir=runs)  # its epochs end on a read of the device
        summary = load_run(run_dir)["summary"]
        out = {"device": load_run(run_dir)["config"]["device"], "seconds": seconds, "s_per_epoch": seconds / epochs, "best_val_acc": result.best_val_acc,
               "num_train": summary["num_train"], "num_val": summary["num_val"],
               "images_per_s": statistics.mean(h["images_per_s"] for h in result.history), "path": result.path,
               "prep_seconds": result.prep_seconds, "micro_batch": result.micro_batch,
               "epoch_seconds": [round(h["seconds"], 2) for h in result.history],
               "val_accs": [round(h["val_acc"], 4) for h in result.history]}
        if mode == "frozen":
            out["predict_ms"] = predict_latency(Predictor(run_dir), data)
    return out


def predict_latency(predictor, data: str) -> float:
    """Median ms to classify one decoded photo after warm-up (transform + forward + softmax)."""
    from core.data.images import load_rgb
    img = load_rgb(next(p for p in sorted((Path(data) / "val").rglob("*")) if p.is_file()))
    for _ in range(3):
        predictor.predict(img)
    times = []
    for _ in range(15):
        t = time.perf_counter()
        predictor.predict(img)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def floor(arch: str, batch_size: int) -> dict:
    """Model-only throughput on ready tensors (channels_last): the machine's floor."""
    from core.device import configure_threads, inference_batch_size, pick_device
    from core.models.zoo import build_model
    configure_threads()
    device = pick_device()
    model = build_model(arch, 2, "none").model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def train_rate(bs, steps=max(4, 64 // batch_size)):
        x = torch.randn(bs, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (bs,), device=device)
        model.train()
        for i in range(steps + 1):
            if i == 1:
                sync(device)
                t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(device)
        return bs * steps / (time.perf_counter() - t)

    from core.models.inference import fused_for_inference
    fused = fused_for_inference(model)  # the fastest eval form of the same function
    bs_inf = inference_batch_size(device, arch)
    x = torch.randn(bs_inf, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fused(x)
        sync(device)
        t = time.perf_counter()
        n = max(1, 64 // bs_inf)
        for _ in range(n):
            fused(x)
        sync(device)
        inf = bs_inf * n / (time.perf_counter() - t)
    return {"train_img_s": train_rate(batch_size), "train_img_s_by_size": {b: train_rate(b) for b in (8, 16, 32)},
            "infer_img_s": inf}


def run_cell(a) -> dict:
    from core.device import configure_threads, pick_device
    configure_threads()
    impl, mode = a.cell.split(":")
    if impl == "floor":
        return floor(a.arch, a.batch_size)
    epochs = getattr(a, f"epochs_{mode}")
    fn = baseline if impl == "baseline" else ours
    out = fn(a.data, a.arch, mode, epochs, a.batch_size, a.seed)
    return {**out, **peak_memory(pick_device("auto"))}


def _cell(args: list[str], cell: str) -> dict:
    # Each cell computes its own frozen features: a disk cache shared between cells would
    # hand the fine_tune row the frozen row's features for free.
    env = {**os.environ, "TRANSFERLAB_FEATURE_DISK": "0"}
    proc = subprocess.run([sys.executable, "-m", "core", "bench", *args, "--cell", cell], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench cell {cell} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(a) -> int:
    if not a.data or not (Path(a.data) / "train").is_dir():
        print("error: bench needs a dataset with train/ and val/ (the ants/bees photos in ../shared); pass --data", file=sys.stderr)
        return 2
    if a.cell:
        print(json.dumps(run_cell(a)))
        return 0
    args = ["--data", a.data, "--arch", a.arch, "--epochs-frozen", str(a.epochs_frozen), "--epochs-finetune",
            str(a.epochs_finetune), "--epochs-fine_tune", str(a.epochs_fine_tune), "--epochs-scratch", str(a.epochs_scratch), "--batch-size", str(a.batch_size),
            "--seed", str(a.seed)]
    from core.device import cpu_facts, cpu_line, device_label
    print(f"CPU: {cpu_line()}", file=sys.stderr, flush=True)
    results = {"machine": device_label(), "cpu": cpu_facts(), "arch": a.arch, "batch_size": a.batch_size, "floor": _cell(args, "floor:all"),
               "modes": {}}
    for mode in a.modes.split(","):
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        base, mine = _cell(args, f"baseline:{mode}"), _cell(args, f"ours:{mode}")
        results["modes"][mode] = {"epochs": getattr(a, f"epochs_{mode}"), "baseline": base, "ours": mine,
                                  "speedup": base["s_per_epoch"] / mine["s_per_epoch"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))  # first: the figures survive a bad table
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    f = r["floor"]
    gpu = any("gpu_peak_mb" in m["ours"] for m in r["modes"].values())
    peak = "gpu_peak_mb" if gpu else "peak_mb"
    from .device import cpu_line
    sizes = ", ".join(f"{v:.1f} at {k}" for k, v in f["train_img_s_by_size"].items())
    lines = [f"CPU: {cpu_line(r['cpu'])}.", "",
             f"Machine: {r['machine']}; {r['arch']}, batch {r['batch_size']}. Floor (model only, ready tensors, channels_last): "
             f"train img/s {sizes}; inference {f['infer_img_s']:.0f} img/s.", "",
             "| mode | epochs | baseline s/epoch | ours s/epoch | speed-up | baseline best val acc | ours best val acc "
             f"| ours train img/s | ours / floor (s/epoch) | peak {'GPU ' if gpu else ''}MB (base / ours) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    names = {"fine_tune": "fine_tune schedule (vs tutorial fine-tuning)"}
    for mode, m in r["modes"].items():
        b, o = m["baseline"], m["ours"]
        # Floor epoch: every training image at the model-only training rate, every val image at
        # the model-only inference rate.  The frozen path needs no training pass through the body.
        # The best micro-batch's rate: what a perfect trainer could reach on this machine.
        floor_epoch = o["num_train"] / max(f["train_img_s_by_size"].values()) + o["num_val"] / f["infer_img_s"]
        vs_floor = (f"{o['s_per_epoch'] / floor_epoch:.2f}x ({floor_epoch:.1f}s)" if mode in ("finetune", "scratch")
                    else "n/a (body runs once)" if mode == "frozen" else "n/a (first epoch on cached features)")
        lines.append(f"| {names.get(mode, mode)} | {m['epochs']} | {b['s_per_epoch']:.2f} | {o['s_per_epoch']:.2f} | {m['speedup']:.1f}x | "
                     f"{b['best_val_acc']:.3f} | {o['best_val_acc']:.3f} | {o['images_per_s']:.0f} | {vs_floor} | "
                     f"{b[peak]:.0f} / {o[peak]:.0f} |")
    if "frozen" in r["modes"] and "predict_ms" in r["modes"]["frozen"]["ours"]:
        lines += ["", f"One photo classified in {r['modes']['frozen']['ours']['predict_ms']:.1f} ms (median, after warm-up)."]
    return "\n".join(lines)
