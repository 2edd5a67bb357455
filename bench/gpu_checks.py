"""The checks of ``gpu_check.py``, in order; each takes the ``Context`` and returns
(status, note, figures).  Later checks reuse the runs of earlier ones (the export is of
the frozen run), so the order is part of the design."""
from __future__ import annotations

import gc
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.device import amp_context
from core.jobs.queue import TrainingQueue, default_concurrency
from core.models.inference import fold_batchnorm, fused_for_inference, is_view_of
from core.models.zoo import ModelSpec, build_model, instantiate
from core.training.experiment import ExperimentConfig, run_experiment
from core.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
OOM_SEED = 13  # the run whose training step asks for more memory than any GPU has


@dataclass
class Context:
    device: torch.device
    folder: Path
    data: Path
    arch: str            # MobileNetV2 on a GPU (the target); a smaller network for the dry run
    batch: int
    epochs: int
    runs: dict = field(default_factory=dict)  # name -> (run folder, result)

    @property
    def dry(self) -> bool:
        return self.device.type != "cuda"

    @classmethod
    def make(cls, device: torch.device, folder: Path) -> "Context":
        gpu = device.type == "cuda"
        data = write_photos(folder / "photos", train=384 if gpu else 8, val=64 if gpu else 4,
                            size=(320, 240) if gpu else (96, 72))
        return cls(device, folder, data, "mobilenet_v2" if gpu else "mobilenet_v3_small", 32 if gpu else 8,
                   3 if gpu else 2)

    def config(self, name: str, freeze="backbone", arch: str | None = None, **train) -> ExperimentConfig:
        train = {"epochs": self.epochs, "batch_size": self.batch, "seed": 0, "amp": "auto", **train}
        return ExperimentConfig(data=str(self.data), arch=arch or self.arch, weights="none", freeze=freeze, name=name,
                                device=self.device.type, train=TrainConfig(**train))

    def train(self, name: str, **kw):
        run_dir, result, seconds = run_experiment(self.config(name, **kw), runs_dir=self.folder / "runs")
        self.runs[name] = (run_dir, result)
        return run_dir, result, seconds


def write_photos(root: Path, train: int, val: int, size) -> Path:
    """Two classes a network can tell apart from scratch: warm discs and cool stripes, at
    random places, sizes and shades, with noise; JPEGs in train/ and val/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for label in ("discs", "stripes"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = size
                base = rng.integers(0, 80, 3)
                img = Image.fromarray((rng.normal(0, 12, (h, w, 3)) + base).clip(0, 255).astype(np.uint8))
                draw = ImageDraw.Draw(img)
                shade = tuple(int(v) for v in rng.integers(150, 255, 3))
                if label == "discs":
                    r = int(rng.integers(h // 6, h // 3))
                    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(shade[0], shade[1] // 3, 40))
                else:
                    step = int(rng.integers(8, 20))
                    for x in range(int(rng.integers(0, step)), w, 2 * step):
                        draw.rectangle([x, 0, x + step // 2, h], fill=(40, shade[1] // 2, shade[2]))
                img.save(root / split / label / f"{i:04d}.jpg", quality=90)
    return root


def _amp_name(device) -> str:
    ctx = amp_context(device, "auto")()
    return str(getattr(ctx, "fast_dtype", "off")).replace("torch.", "") if isinstance(ctx, torch.autocast) else "off"


# ---- the checks ------------------------------------------------------------------------------
def frozen_run(ctx: Context):
    from core.serving.predict import evaluate
    run_dir, result, seconds = ctx.train("frozen", freeze="backbone")
    acc = evaluate(run_dir, ctx.device.type)["accuracy"]
    one = 1 / load_num_val(run_dir)
    figures = {"amp": _amp_name(ctx.device), "path": result.path, "best_val_acc": result.best_val_acc,
               "evaluate_acc": acc, "run_seconds": round(seconds, 2), "prep_seconds": round(result.prep_seconds, 2)}
    if result.path != "frozen-features":
        return "FAIL", f"path {result.path!r}: {result.path_note}", figures
    # Validation is fp32, as Predict: the same accuracy up to an image on a near tie.
    if abs(acc - result.best_val_acc) > one + 1e-9:
        return "FAIL", f"validated {result.best_val_acc:.3f}, evaluated {acc:.3f}", figures
    return "PASS", f"frozen-features under amp {figures['amp']}; best val {result.best_val_acc:.3f}, evaluate {acc:.3f}", figures


def load_num_val(run_dir) -> int:
    from core.runs.store import load_run
    return int(load_run(run_dir)["summary"]["num_val"])


def fine_tune_run(ctx: Context):
    from core.training.schedules import FINE_TUNE_RECIPE
    _, result, seconds = ctx.train("fine_tune", freeze="none", **FINE_TUNE_RECIPE)
    plain = [h for h in result.history if h["path"] == "plain"]
    figures = {"amp": _amp_name(ctx.device), "path": result.path, "val_accs": [h["val_acc"] for h in result.history],
               "plain_images_per_s": [round(h["images_per_s"], 1) for h in plain], "run_seconds": round(seconds, 2)}
    finite = all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in result.history)
    if result.path != "frozen-features, then plain" or not plain or not finite:
        return "FAIL", f"path {result.path!r}, {len(plain)} plain epoch(s), finite losses {finite}", figures
    return "PASS", f"head on features, then {len(plain)} plain epoch(s) under amp {figures['amp']}", figures


def _history(records) -> list:
    return [(h["epoch"], h["train_loss"], h["val_loss"], h["val_acc"]) for h in records]


def _wait(jobs, timeout=240):
    end = time.time() + timeout
    while any(j.active for j in jobs):
        if time.time() > end:
            raise TimeoutError("queue jobs still running")
        time.sleep(0.05)


def queue_jobs(ctx: Context):
    """Two jobs through the queue at its default (two at once on CUDA, each on its own
    stream, each run with its own generators): both overlap, and each equals its run alone."""
    other = dict(freeze="none", epochs=1)
    _, other_alone, _ = ctx.train("queue-other-alone", **other)
    q = TrainingQueue(device=ctx.device.type)
    first = q.submit("tab-a", "frozen again", [("run", ctx.config("queue-frozen", freeze="backbone"))])
    second = q.submit("tab-b", "another", [("run", ctx.config("queue-other", **other))])
    _wait([first, second])
    figures = {"concurrency": q.concurrency, "default_concurrency": default_concurrency(ctx.device.type),
               "statuses": [first.status, second.status],
               "overlapped": bool(first.started and second.started and second.started < first.finished
                                  and first.started < second.finished)}
    if [first.status, second.status] != ["done", "done"]:
        return "FAIL", f"jobs ended {first.status}/{second.status}: {first.runs[0].error or second.runs[0].error}", figures
    pairs = {"frozen": (_history(first.runs[0].history), _history(ctx.runs["frozen"][1].history)),
             "fine-tune": (_history(second.runs[0].history), _history(other_alone.history))}
    for name, (queued, solo) in pairs.items():
        # The head on cached features is bitwise reproducible; cuDNN's backward through the
        # body need not be (atomics), so there a run alone and queued agree to 1 % of the loss.
        # Crops or dropout drawn from another job's generator would move the loss far more.
        same = queued == solo if name == "frozen" else len(queued) == len(solo) and all(
            abs(a - b) <= 0.01 * max(abs(b), 1e-6) for q_row, s_row in zip(queued, solo) for a, b in zip(q_row[1:3], s_row[1:3]))
        figures[f"{name}_equal"] = queued == solo
        if not same:
            return "FAIL", f"the queued {name} run differs from the same run alone: {queued} vs {solo}", figures
    if q.concurrency > 1 and not figures["overlapped"]:
        return "FAIL", f"{q.concurrency} workers but the two jobs ran one after the other", figures
    return "PASS", (f"{q.concurrency} worker(s){', the jobs overlapped' if figures['overlapped'] else ''}; "
                    "each queued run equals the same run alone, epoch for epoch"), figures


def oom_recovery(ctx: Context):
    """A training step that runs out of memory: the run's error names the batch size, the
    GPU's memory comes back, the next job runs."""
    from core.training.passes import Passes
    original = Passes._backward

    def backward(self, loss):
        if self.cfg.seed == OOM_SEED:
            if self.device.type == "cuda":
                torch.empty(2**40, dtype=torch.uint8, device=self.device)  # 1 TiB: CUDA's allocator fails for real
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected for the dry run)")
        return original(self, loss)

    cuda = ctx.device.type == "cuda"
    gc.collect()  # what earlier checks left in reference cycles is not this check's
    before = torch.cuda.memory_allocated(ctx.device) if cuda else 0
    Passes._backward = backward
    try:
        q = TrainingQueue(device=ctx.device.type)
        bad = q.submit("tab-a", "too big", [("run", ctx.config("oom", freeze="none", epochs=1, seed=OOM_SEED))])
        good = q.submit("tab-b", "next", [("run", ctx.config("after-oom", freeze="none", epochs=1))])
        _wait([bad, good])
    finally:
        Passes._backward = original
    gc.collect()
    after = torch.cuda.memory_allocated(ctx.device) if cuda else 0
    error = bad.runs[0].error or ""
    figures = {"error": error, "next_job": good.status, "allocated_mb_before": before / 2**20,
               "allocated_mb_after": after / 2**20}
    if not error.startswith(f"out of GPU memory training {ctx.arch} at batch size {ctx.batch}") or bad.runs[0].trace:
        return "FAIL", f"the run's error: {error or bad.status!r}", figures
    if good.status != "done" or after > before + 64 * 2**20:
        return "FAIL", f"next job {good.status}; allocated {before / 2**20:.0f} MB before, {after / 2**20:.0f} after", figures
    return "PASS", f"{error[:70]}...; next job done; allocated {after / 2**20:.0f} MB after", figures


def fold_tf32(ctx: Context):
    """BatchNorm folding with the device's default precision (TF32 convolutions on CUDA)."""
    g = torch.Generator().manual_seed(0)
    model = instantiate(ModelSpec("mobilenet_v2", 2)).eval()
    for m in model.modules():  # statistics of a trained network, not the identity of a fresh one
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model = model.to(ctx.device, memory_format=torch.channels_last)
    fast = fused_for_inference(model)
    x = torch.randn(8, 3, 224, 224, generator=g).to(ctx.device).contiguous(memory_format=torch.channels_last)
    probe = torch.randn(1, 3, 96, 96, generator=g).to(ctx.device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, out = model(x).float(), fast(x).float()
    gap, scale = float((ref - out).abs().max()), float(ref.abs().max())
    figures = {"folded": not is_view_of(fast, model), "max_abs_gap": gap, "logit_scale": scale,
               "float32_check_would_fold": fold_batchnorm(model, probe, torch.float32) is not None,
               "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32) if ctx.device.type == "cuda" else None}
    if not figures["folded"] or gap > 1e-2 * max(scale, 1.0):
        return "FAIL", f"folded {figures['folded']}, |Δlogit| {gap:.1e} at scale {scale:.2f}", figures
    return "PASS", (f"folded; |Δlogit| {gap:.1e} at scale {scale:.2f}; a float32 check would have "
                    f"{'folded' if figures['float32_check_would_fold'] else 'refused'}"), figures


def predict_gradcam_race(ctx: Context):
    from core.data.images import load_rgb
    from core.serving.predict import Predictor, explain
    run_dir, _, _ = ctx.train("squeezenet", freeze="none", arch="squeezenet1_1", epochs=1)
    p = Predictor(run_dir, ctx.device.type)
    image = load_rgb(next((ctx.data / "val" / "discs").iterdir()))
    expected, heat = [r["label"] for r in p.predict(image)], np.asarray(explain(p, image, 0)).astype(int)
    errors, times, rounds = [], [], 10 if ctx.dry else 30

    def predicting():
        for _ in range(rounds):
            try:
                t = time.perf_counter()
                got = [r["label"] for r in p.predict(image)]
                times.append(time.perf_counter() - t)
                if got != expected:
                    errors.append(f"predicted {got}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(f"predict: {type(e).__name__}: {e}")

    def explaining():
        for _ in range(rounds):
            try:
                # Within 2/255: cuDNN may sum a gradient in another order from one call to the next.
                got = np.asarray(explain(p, image, 0)).astype(int)
                if got.shape != heat.shape or np.abs(got - heat).max() > 2:
                    errors.append("a different heatmap")
            except Exception as e:  # noqa: BLE001
                errors.append(f"explain: {type(e).__name__}: {e}")
    threads = [threading.Thread(target=f) for f in (predicting, predicting, explaining, explaining)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    figures = {"errors": len(errors), "first_errors": errors[:3], "shared_model": is_view_of(p.fast_model, p.model),
               "predict_ms_median": round(1000 * statistics.median(times), 2) if times else None}
    if errors:
        return "FAIL", f"{len(errors)} errors, first: {errors[0]}", figures
    return "PASS", f"{4 * rounds} predictions and explanations at once, no error", figures


def export_parity(ctx: Context):
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return "SKIP", f"ONNX export not checked: {e} (the parity check needs onnx and onnxruntime)", {}
    from core.serving.export import ExportError, export_run
    # The MobileNetV2 frozen run on a GPU; in the dry run the SqueezeNet one, which
    # torch.export captures in a third of the time on a 2-core CPU.
    name = "squeezenet" if ctx.dry else "frozen"
    try:
        report = export_run(ctx.runs[name][0], "onnx", out=ctx.folder / "exports", max_images=64)
    except ExportError as e:
        return "FAIL", str(e), {}
    figures = {k: report.get(k) for k in ("arch", "exporter", "top1_agreement", "max_abs_logit_diff", "tolerance",
                                          "images", "export_seconds")}
    return "PASS", f"{report['arch']} trained on {ctx.device.type}: {report['summary']}", figures


def torchrun(ctx: Context):
    if ctx.device.type != "cuda":
        return "SKIP", "no GPU: torchrun runs on the GPUs present (the CPU path is tests/test_distributed.py)", {}
    gpus = torch.cuda.device_count()
    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nproc = gpus if gpus >= 2 else 2
    args = [*launcher, "--standalone", f"--nproc_per_node={nproc}", "-m", "core", "train", str(ctx.data),
            "--arch", ctx.arch, "--weights", "none", "--freeze", "none", "--schedule", "fine_tune", "--epochs", "2",
            "--batch-size", str(ctx.batch * nproc), "--runs-dir", str(ctx.folder / "torchrun-runs")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=240)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    figures = {"gpus": gpus, "nproc": nproc, "returncode": proc.returncode, "error_lines": errors,
               "stdout_tail": proc.stdout[-500:]}
    if gpus < 2:  # two processes on one GPU: refused in one line, before anything starts
        if proc.returncode != 0 and len(errors) == 1 and "has 1 GPU(s)" in errors[0]:
            return "SKIP", f"1 GPU: multi-GPU training not run; 2 processes on it refused in one line ({errors[0][:60]}...)", figures
        return "FAIL", f"2 processes on 1 GPU: exit {proc.returncode}, error lines {errors[:2]}", figures
    import json
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    try:
        out = json.loads(last)
    except ValueError:
        out = {}
    figures["result"] = out
    if proc.returncode != 0 or not out.get("run_dir"):
        return "FAIL", f"exit {proc.returncode}: {(errors or [proc.stderr[-200:]])[0]}", figures
    return "PASS", f"{nproc} GPUs: best val {out['best_val_acc']:.3f}, path {out.get('path')}", figures


def throughput(ctx: Context):
    """The trainer's images/s on the plain path against the model alone: synchronised
    forward+backward on ready tensors on the device, same network, batch and autocast."""
    model = build_model(ctx.arch, 2, "none").model.to(ctx.device, memory_format=torch.channels_last).train()
    autocast, crop = amp_context(ctx.device, "auto"), 224
    x = torch.randn(ctx.batch, 3, crop, crop, device=ctx.device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (ctx.batch,), device=ctx.device)
    steps = 3 if ctx.dry else 30
    for i in range(steps + 3):
        if i == 3:
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            t = time.perf_counter()
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    bound = ctx.batch * steps / (time.perf_counter() - t)
    del model, x
    _, result, _ = ctx.train("throughput", freeze="none", scheduler="none")
    trainer = max(h["images_per_s"] for h in result.history)
    figures = {"model_only_images_per_s": round(bound, 1), "trainer_images_per_s": round(trainer, 1),
               "ratio": round(trainer / bound, 3), "batch": ctx.batch, "amp": _amp_name(ctx.device),
               "micro_batch": result.micro_batch}
    note = f"trainer {trainer:.0f} img/s, model alone {bound:.0f} img/s: {trainer / bound:.0%}"
    if ctx.dry:
        return "PASS", note + " (dry run: figures only; the 70% target is for one GPU)", figures
    return ("PASS" if trainer >= 0.7 * bound else "FAIL"), note + " (target 70%, issue #20)", figures


CHECKS = [("frozen run, AMP", frozen_run), ("fine-tune run, AMP", fine_tune_run), ("queue: two jobs", queue_jobs),
          ("out of memory", oom_recovery), ("folding under TF32", fold_tf32),
          ("predict + Grad-CAM race", predict_gradcam_race), ("ONNX export parity", export_parity),
          ("torchrun", torchrun), ("throughput vs model", throughput)]
