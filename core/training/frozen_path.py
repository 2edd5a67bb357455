"""Preparing the frozen fast path: cached body outputs for validation and training views.

``features.py`` has the primitives (where the tail starts, running the body up to it,
checking the cut).  This module decides what to compute and what to take from the
shared ``FeatureCache``, and reports progress:

* validation features: the evaluation view of every validation image, computed in fp32
  whatever the run's ``amp``: validation is fp32 (``trainer._validate``), so the accuracy a
  run records is what Predict and Compare's evaluation compute, and the equivalence check
  below compares an fp32 tail with the fp32 full model, like with like.  Under autocast
  (bf16 on CUDA by default) the check failed on a ~1e-2 logit gap and every head-only run
  trained the whole network instead;
* training views: ``feature_views`` augmented views of every training image, view v
  drawn with the seed ``seed * 7919 + v``, so a view computed now equals the same view
  computed in another job (that is what makes sharing exact).  These run under the run's
  autocast: they are training inputs, and the body's bf16 rounding is noise far below the
  augmentation's.  They come from the same cut as the checked validation features.

A run on a subset of a training list (the data-efficiency sweep) passes that list as a
``FeaturePool``: the views are computed and cached for the whole pool, with the pool's
seed, and the run takes its rows.  Every subset of one pool then shares one feature pass
(a subset's own file list would be a new key, so a new pass, per subset), and so does a
plain run on the whole list with that seed.

On a cache hit no image is decoded at all, except the first few validation images: the
tail on their cached features must reproduce the full model's logits, which checks the
cut and the cache entry against the model actually being trained.  A key that passed is
not checked again in this process (its key holds the body's tensors, the cut and the
transforms, so the check would repeat itself): the points of a data-efficiency sweep
then take no image decoding and no full forward pass at all.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from core.training import features
from core.data.batches import BatchSource, Stopped, estimate_bytes, train_batch
from core.training.feature_cache import FeatureCache, feature_key, files_signature, tensors_digest
from core.data.transforms import eval_transform


_VERIFIED: set[str] = set()  # validation-feature keys whose cut passed the equivalence check


@dataclass(frozen=True)
class FeaturePool:
    """The training list a run's training samples are drawn from, and the seed its views use."""
    samples: list
    seed: int


def pool_rows(pool: FeaturePool | None, samples) -> torch.Tensor | None:
    """Row of each sample in the pool, or None (no pool, or a sample outside it: own features)."""
    if pool is None:
        return None
    index = {(str(p), int(y)): i for i, (p, y) in enumerate(pool.samples)}
    rows = [index.get((str(p), int(y))) for p, y in samples]
    return None if None in rows else torch.tensor(rows, dtype=torch.long)


@dataclass
class FrozenFeatures:
    tail: torch.nn.Module
    val_features: torch.Tensor
    val_labels: torch.Tensor
    train_views: list[torch.Tensor]
    train_labels: torch.Tensor
    hits: int = 0            # cache entries reused (val + views)
    computed: int = 0        # cache entries computed here
    decode_seconds: float = 0.0
    feature_seconds: float = 0.0
    val_source: BatchSource | None = None  # decoded here on a miss; the plain path may reuse it


def _body_state(model, tail) -> dict[str, torch.Tensor]:
    """The tensors that determine the body's output: everything outside the tail."""
    tail_paths = [features.module_path(model, m) for m in tail.body]
    return {k: v for k, v in model.state_dict().items() if not any(k.startswith(p + ".") for p in tail_paths)}


def prepare(model, arch, train_samples, val_samples, spec, cfg, device, autocast, infer_bs: int,
            cache: FeatureCache | None, emit, stop, pool: FeaturePool | None = None,
            key_extra: dict | None = None) -> FrozenFeatures | str:
    """The frozen features, or the reason the fast path cannot be used (a string).
    ``key_extra`` joins the cache keys (a rank's shard under torchrun: distributed.py)."""
    rows = pool_rows(pool, train_samples)
    labels = torch.tensor([y for _, y in train_samples])
    if rows is not None:  # the views are the pool's, drawn with its seed; rows are taken below
        train_samples, view_seed = pool.samples, pool.seed
    else:
        view_seed = cfg.seed
    entry, tail = features.find_tail(model, arch)
    numeric = {"device": device.type, "amp": cfg.amp, "torch": torch.__version__, "batch": infer_bs}
    base = {"arch": arch, "entry": features.module_path(model, entry), "spec": spec.to_dict(), **numeric,
            **(key_extra or {})}
    if cache is not None:
        base["body"] = tensors_digest(_body_state(model, tail))
    decoded_train = cfg.cache_mb > 0 and estimate_bytes([p for p, _ in train_samples],
                                                        max(spec.resize_size, 2 * spec.crop_size)) <= cfg.cache_mb * 2**20
    views = max(1, cfg.feature_views)
    total = -(-len(val_samples) // infer_bs) + views * -(-len(train_samples) // infer_bs)
    done = [0]
    out = FrozenFeatures(tail, None, torch.tensor([y for _, y in val_samples]), [],  # type: ignore[arg-type]
                         labels)

    def on_batch(_k, _n):
        done[0] += 1
        emit("on_progress", {"phase": "features", "done": done[0], "total": total})
        if stop.is_set():
            raise Stopped

    def decode_progress(what):
        return lambda d, n: emit("on_progress", {"phase": "decode", "what": what, "done": d, "total": n})

    def cached(key_parts: dict, compute, key_base=base):
        if cache is None:
            return compute(), False
        value, hit = cache.get_or_compute(feature_key(**key_base, **key_parts), lambda: {"x": compute()})
        return value["x"], hit

    def val_features():
        t = time.perf_counter()
        out.val_source = BatchSource(val_samples, spec, False, infer_bs, cfg.cache_mb, device.type == "cuda",
                                     progress=decode_progress("validation images"), stop=stop)
        out.decode_seconds += time.perf_counter() - t
        t = time.perf_counter()
        x = features.tail_inputs(model, entry, out.val_source, device, None, on_batch)  # fp32: see the docstring
        out.feature_seconds += time.perf_counter() - t
        return x

    # Keyed as fp32 ("off"): shared by runs with and without amp, and never an entry an
    # earlier version computed under autocast.
    val_base = {**base, "amp": "off"}
    val_parts = {"kind": "val", "files": files_signature(val_samples)}
    out.val_features, hit = cached(val_parts, val_features, val_base)
    out.hits, out.computed = out.hits + hit, out.computed + (not hit)
    checked = feature_key(**val_base, **val_parts) if cache is not None else None
    if checked not in _VERIFIED or checked is None:
        if not features.verify_tail(model, tail, _first_val_batch(out, val_samples, spec, infer_bs),
                                    out.val_features[:min(infer_bs, len(val_samples))], device):
            return "frozen fast path failed its equivalence check"
        if checked is not None:
            _VERIFIED.add(checked)

    train_source: list[BatchSource] = []  # decoded at most once, only if some view is missing

    def view(v: int):
        def compute():
            if not train_source:
                t = time.perf_counter()
                train_source.append(BatchSource(train_samples, spec, True, infer_bs, cfg.cache_mb, device.type == "cuda",
                                                progress=decode_progress("training images"), stop=stop))
                out.decode_seconds += time.perf_counter() - t
            t = time.perf_counter()
            views = torch.Generator().manual_seed(view_seed * 7919 + v)  # the view's own: the cache's entry
            x = features.tail_inputs(model, entry, _in_order(train_source[0], views), device, autocast, on_batch)
            out.feature_seconds += time.perf_counter() - t
            return x
        return compute

    train_sig = files_signature(train_samples)
    for v in range(views):
        x, hit = cached({"kind": "train", "files": train_sig, "seed": view_seed, "view": v, "decoded": decoded_train}, view(v))
        out.train_views.append(x if rows is None else x[rows])
        out.hits, out.computed = out.hits + hit, out.computed + (not hit)
    return out


def prepare_sharded(ranks, model, arch, train_samples, val_samples, spec, cfg, device, autocast, infer_bs,
                    cache, emit, stop):
    """Under torchrun (``distributed.Ranks``): the frozen features on every rank, each rank
    running the body over its shard only.  A fallback to the plain path on any rank is a
    fallback on all of them."""
    from core.training.distributed import SHARD_SEED
    shard_cfg = dataclasses.replace(cfg, seed=cfg.seed + ranks.rank * SHARD_SEED)  # this shard's crops
    got = prepare(model, arch, ranks.shard(train_samples), ranks.shard(val_samples), spec, shard_cfg,
                  device, autocast, infer_bs, cache, emit, stop, key_extra={"shard": f"{ranks.rank}/{ranks.world}"})
    if ranks.any(isinstance(got, str)):
        return got if isinstance(got, str) else "frozen fast path failed its equivalence check on another rank"
    got.val_features = ranks.gather_shards(got.val_features, len(val_samples))
    got.val_labels = torch.tensor([y for _, y in val_samples])
    got.train_views = [ranks.gather_shards(v, len(train_samples)) for v in got.train_views]
    got.train_labels = torch.tensor([y for _, y in train_samples])
    # got.val_source stays this rank's shard: the plain path after an unfreeze validates shards.
    return got


def _first_val_batch(out: FrozenFeatures, val_samples, spec, infer_bs: int) -> torch.Tensor:
    """The first validation batch as the full model sees it: from the decoded source if
    this job built one, else through the PIL evaluation transform (bit-identical)."""
    if out.val_source is not None:
        return next(iter(out.val_source))[0]
    from core.data.images import load_rgb
    tf = eval_transform(spec)
    return torch.stack([tf(load_rgb(p)) for p, _ in val_samples[:infer_bs]])


def _in_order(source: BatchSource, generator: torch.Generator):
    """Augmented training batches without shuffling, so view k of image i lines up with its
    label; the crops drawn from ``generator``, never from a generator another job draws from."""
    if source.cache is None:
        loader = source.loader
        yield from torch.utils.data.DataLoader(loader.dataset, batch_size=source.batch_size, shuffle=False,
                                               num_workers=loader.num_workers, generator=generator)
        return
    images, labels = source.cache.images, source.cache.labels
    for s in range(0, len(images), source.batch_size):
        yield train_batch(images[s:s + source.batch_size], source.spec, generator), labels[s:s + source.batch_size]
