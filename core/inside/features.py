"""Pooled body features of a dataset, through the same cache entries as training.

A body's pooled features are exactly what the frozen fast path caches: the input of the
classifier tail (``training/features.py``).  So this module asks ``frozen_path.prepare``
for them, with the cache, the inference batch size and the config a frozen run of the
same setup would use: a visitor who trained first draws the Inside page without running
the body, and one who looked inside first trains a frozen head without running it
either.  One extraction, whichever comes first.

What the points are, as a consequence: validation images in their evaluation view (the
centre crop every run validates on), training images in augmented view 0 (the random
crop and flip a frozen run trains its head on, drawn with the run's seed).  On ants/bees
the k-NN accuracy against augmented training views is 0.948, against centre crops 0.967
(MobileNetV2, ImageNet): two points lower, and the price of sharing the training's pass.

Families whose head has auxiliary classifiers (GoogLeNet, Inception v3) have no single
tail, so training never caches them; here their features are the head's input in eval
mode, both splits in the evaluation view, under a key of their own.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import torch
from torch import nn

from core.data.batches import BatchSource, estimate_bytes
from core.data.transforms import TransformSpec
from core.device import amp_context, inference_batch_size
from core.models.surgery import head_path, head_paths
from core.training import features as tail_features
from core.training import frozen_path
from core.training.feature_cache import FeatureCache, feature_key, files_signature, tensors_digest
from core.training.train_config import TrainConfig


@dataclass
class Body:
    """A network whose body is looked at: ImageNet weights, random init, a run's or a file's."""
    label: str              # what the page and the CLI call it: "ImageNet", "random init", a run's name
    kind: str               # imagenet | random | run | file
    arch: str
    model: nn.Module        # eval mode, on its device; callers never change it
    spec: TransformSpec     # the transforms of the weights it was built with (a run's own)
    weights: str            # as a run records it: "imagenet:IMAGENET1K_V1", "none", "file:x.pth", "run:<name>"


def build_body(kind: str, arch: str, num_classes: int, device: torch.device, seed: int = 0,
               weights_file: str | None = None) -> Body:
    """ImageNet (``imagenet``), random init seeded by ``seed`` (``random``; what a scratch run
    of that seed starts from) or a weights file (``file``)."""
    from core.models.zoo import build_model
    weights = {"imagenet": "imagenet", "random": "none", "file": weights_file}[kind]
    built = build_model(arch, num_classes, weights, seed=seed)
    label = {"imagenet": "ImageNet", "random": "random init"}.get(kind) or built.weights.removeprefix("file:")
    model = built.model.to(device, memory_format=torch.channels_last).eval()
    return Body(label, kind, arch, model, built.transform, built.weights)


def run_body(run: dict, device: torch.device) -> Body:
    """A finished run's network (``load_run``'s dict) with its best weights."""
    from core.serving.predict import checked_config, load_model
    spec, transform = checked_config(run)
    model = load_model(run, device, spec)
    return Body(run["name"], "run", spec.arch, model, transform, f"run:{run['name']}")


def inside_config(cfg: TrainConfig | None) -> TrainConfig:
    """The training config whose keys are shared: the setup's seed, amp and decoded-cache
    cap, one augmented view (view 0 is the same entry whatever a run's view count)."""
    return dataclasses.replace(cfg or TrainConfig(), feature_views=1)


@dataclass
class Features:
    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor
    val_labels: torch.Tensor
    hits: int               # cache entries reused
    computed: int           # cache entries computed here
    seconds: float
    train_view: str         # "augmented view 0" (shared with training) or "evaluation view"
    decode_seconds: float = 0.0   # of those computed here: reading photos,
    body_seconds: float = 0.0     # and running the body (what the queue's speed book learns from)


def _own_base(body: Body, device: torch.device) -> dict:
    """Key parts of the eval-view path (no single tail): the frozen path's, under another kind."""
    heads = head_paths(body.model, body.arch)
    state = {k: v for k, v in body.model.state_dict().items() if not any(k.startswith(h + ".") for h in heads)}
    return {"arch": body.arch, "entry": head_path(body.model, body.arch), "spec": body.spec.to_dict(),
            "device": device.type, "amp": "off", "torch": torch.__version__,
            "batch": inference_batch_size(device, body.arch), "body": tensors_digest(state)}


def cache_keys(body: Body, train_samples, val_samples, cfg: TrainConfig, device: torch.device) -> list[str]:
    """The cache entries an extraction reads or writes, validation first, built as
    ``frozen_path.prepare`` builds them (tested against it: a drift would silently cost a
    second extraction)."""
    cfg = inside_config(cfg)
    found = tail_features.find_tail(body.model, body.arch)
    if found is None:
        base = _own_base(body, device)
        return [feature_key(**base, kind="inside-eval", files=files_signature(s)) for s in (val_samples, train_samples)]
    entry, tail = found
    base = {"arch": body.arch, "entry": tail_features.module_path(body.model, entry), "spec": body.spec.to_dict(),
            "device": device.type, "amp": cfg.amp, "torch": torch.__version__,
            "batch": inference_batch_size(device, body.arch),
            "body": tensors_digest(frozen_path._body_state(body.model, tail))}
    spec = body.spec
    decoded = cfg.cache_mb > 0 and estimate_bytes([p for p, _ in train_samples],
                                                  max(spec.resize_size, 2 * spec.crop_size)) <= cfg.cache_mb * 2**20
    return [feature_key(**{**base, "amp": "off"}, kind="val", files=files_signature(val_samples)),
            feature_key(**base, kind="train", files=files_signature(train_samples), seed=cfg.seed, view=0,
                        decoded=decoded)]


def is_cached(body: Body, train_samples, val_samples, cfg: TrainConfig, device, cache: FeatureCache) -> bool:
    """Whether ``extract`` would run no image through the body (the page draws at once then)."""
    return all(cache.contains(k) for k in cache_keys(body, train_samples, val_samples, cfg, device))


def extract(body: Body, train_samples, val_samples, cfg: TrainConfig | None, device: torch.device,
            cache: FeatureCache | None, progress=None, stop: threading.Event | None = None) -> Features:
    """Pooled features of both splits.  ``progress(payload)`` gets the frozen path's
    ``{"phase": "decode" | "features", "done", "total"}``; ``stop`` ends it between batches
    (``batches.Stopped``), storing nothing half made."""
    cfg, stop = inside_config(cfg), stop or threading.Event()
    t0 = time.perf_counter()

    def emit(_event, payload):
        if progress:
            progress(payload)
    found = _read_cached(body, train_samples, val_samples, cfg, device, cache, t0)
    if found is not None:
        return found
    got = None
    if tail_features.find_tail(body.model, body.arch) is not None:
        got = frozen_path.prepare(body.model, body.arch, train_samples, val_samples, body.spec, cfg, device,
                                  amp_context(device, cfg.amp), inference_batch_size(device, body.arch), cache,
                                  emit, stop)
    if got is not None and not isinstance(got, str):
        return Features(pooled(got.train_views[0]), got.train_labels, pooled(got.val_features), got.val_labels, got.hits,
                        got.computed, time.perf_counter() - t0, "augmented view 0", got.decode_seconds,
                        got.feature_seconds)
    return _eval_view_features(body, train_samples, val_samples, cfg, device, cache, emit, stop, t0)


def eval_view(body: Body, samples, cfg: TrainConfig | None, device: torch.device, cache: FeatureCache | None,
              progress=None, stop: threading.Event | None = None) -> tuple[torch.Tensor, bool]:
    """(pooled features, cache hit) of ``samples`` in their evaluation view: the centre crop,
    no augmentation (the data audit compares photos, and a random crop of one is not the
    copy of another).  Keyed and computed as ``frozen_path.prepare`` does its validation
    features, so a validation split is one entry for a frozen run, this page and the audit;
    a training split in this view is an entry of its own."""
    cfg, stop = inside_config(cfg), stop or threading.Event()
    found = tail_features.find_tail(body.model, body.arch)
    # The validation entry's key for these files (the "inside-eval" one where there is no single tail).
    key = cache_keys(body, samples, samples, cfg, device)[0]
    entry = found[0] if found else body.model.get_submodule(head_path(body.model, body.arch))
    infer_bs = inference_batch_size(device, body.arch)
    total, done = -(-len(samples) // infer_bs), [0]

    def on_batch(_k, _n):
        done[0] += 1
        if progress:
            progress({"phase": "features", "done": done[0], "total": total})
        if stop.is_set():
            from core.data.batches import Stopped
            raise Stopped

    def compute():
        source = BatchSource(samples, body.spec, False, infer_bs, cfg.cache_mb, device.type == "cuda", stop=stop)
        return {"x": tail_features.tail_inputs(body.model, entry, source, device, None, on_batch)}
    if cache is None:
        return pooled(compute()["x"]), False
    value, hit = cache.get_or_compute(key, compute)
    return pooled(value["x"]), hit


def _read_cached(body, train_samples, val_samples, cfg, device, cache, t0) -> Features | None:
    """Both entries straight from the cache, or None.  ``prepare`` would give the same
    tensors, after checking its cut on a few decoded photos with a full forward pass (a
    training safety check, 3 s of a busy 2-core CPU per body); reading needs no check."""
    if cache is None:
        return None
    keys = cache_keys(body, train_samples, val_samples, cfg, device)
    entries = [cache.get(k) for k in keys] if all(cache.contains(k) for k in keys) else []
    if len(entries) != 2 or any(e is None or "x" not in e for e in entries):
        return None
    val, train = entries[0]["x"], entries[1]["x"]  # cache_keys: validation first
    if len(val) != len(val_samples) or len(train) != len(train_samples):
        return None
    labels = [torch.tensor([y for _, y in s]) for s in (train_samples, val_samples)]
    return Features(pooled(train), labels[0], pooled(val), labels[1], 2, 0, time.perf_counter() - t0,
                    "augmented view 0" if tail_features.find_tail(body.model, body.arch) else "evaluation view")


def pooled(x: torch.Tensor) -> torch.Tensor:
    """One vector per image: a tail input that is still a map (SqueezeNet's head is a 1x1
    convolution on 13x13 positions) is averaged over its positions, as its tail would.
    Contiguous first: a channels-last map (as computed) and its cached copy (stored
    contiguous) would otherwise be summed in different orders, a few ulps apart."""
    return x.float().contiguous().mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x.float()


def _eval_view_features(body, train_samples, val_samples, cfg, device, cache, emit, stop, t0) -> Features:
    infer_bs = inference_batch_size(device, body.arch)
    entry = body.model.get_submodule(head_path(body.model, body.arch))
    base = _own_base(body, device) if cache is not None else {}
    total = sum(-(-len(s) // infer_bs) for s in (train_samples, val_samples))
    done, hits, out = [0], 0, []

    def on_batch(_k, _n):
        done[0] += 1
        emit("on_progress", {"phase": "features", "done": done[0], "total": total})
        if stop.is_set():
            from core.data.batches import Stopped
            raise Stopped

    spent = {"decode": 0.0, "body": 0.0}
    for samples in (train_samples, val_samples):
        def compute(samples=samples):
            t = time.perf_counter()
            source = BatchSource(samples, body.spec, False, infer_bs, cfg.cache_mb, stop=stop)
            spent["decode"] += time.perf_counter() - t
            t = time.perf_counter()
            x = tail_features.tail_inputs(body.model, entry, source, device, None, on_batch)
            spent["body"] += time.perf_counter() - t
            return {"x": x}
        if cache is None:
            value, hit = compute(), False
        else:
            value, hit = cache.get_or_compute(feature_key(**base, kind="inside-eval", files=files_signature(samples)),
                                              compute)
        hits += hit
        out.append(pooled(value["x"]))
    labels = [torch.tensor([y for _, y in s]) for s in (train_samples, val_samples)]
    return Features(out[0], labels[0], out[1], labels[1], hits, 2 - hits, time.perf_counter() - t0, "evaluation view",
                    spent["decode"], spent["body"])
