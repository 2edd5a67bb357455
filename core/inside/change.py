"""What training changed in a run's body, stage by stage, from input to head.

Two measures per stage of the family table:

* **relative weight change** ``‖W_after − W_start‖ / ‖W_start‖`` over all the stage's
  parameters (BatchNorm's scale and shift included, its running statistics not: they are
  estimates, not learnt weights).  The start is what the run started from: the ImageNet
  weights it loaded, or, for a scratch run, its seeded random init, rebuilt exactly
  (``build_model`` seeds before building, as the run did).  The new head has no start and
  is left out.
* **linear CKA** (Kornblith et al., 2019) between the stage's outputs before and after, on
  the same photos: 1 when the stage still represents the photos the same way (up to a
  rotation and scale), lower when fine-tuning reorganised it.  Computed on each photo's
  output averaged over positions: the head sees pooled features, the comparison then
  ignores where in the photo a feature fired, and a stage's outputs for 150 photos fit
  in memory (the flattened stem of MobileNetV2 alone would be 400 000 numbers a photo).
  Linear rather than kernel CKA: no bandwidth to choose, and it is the variant shown to
  identify corresponding layers across networks.
"""
from __future__ import annotations

import math

import torch

from core.data.batches import BatchSource
from core.device import inference_batch_size
from core.errors import WeightsError
from core.inside import feature_maps
from core.inside.features import Body, build_body
from core.models.surgery import head_paths, stages_of
from core.training.feature_cache import FeatureCache, feature_key, files_signature, tensors_digest


def start_of(run: dict, device: torch.device) -> tuple[Body | None, str]:
    """(the body the run started from, what it is) or (None, why it cannot be rebuilt)."""
    config = run["config"]
    loaded = str(config.get("weights_loaded") or config.get("weights") or "")
    arch, n = config["model"]["arch"], len(run["classes"])
    if loaded.startswith("imagenet"):
        from core.models.zoo import local_weights
        version = loaded.partition(":")[2]
        found = local_weights(arch)
        if found is None:
            return None, f"it started from ImageNet weights of {arch}, which are not on this machine"
        if version and found[0].name != version:
            return None, f"it started from ImageNet weights {version}; this machine has {found[0].name}"
        try:
            return build_body("imagenet", arch, n, device), f"ImageNet weights ({found[0].name})"
        except WeightsError as e:
            return None, str(e)
    if loaded == "none":
        seed = int((config.get("train") or {}).get("seed", 0))
        return build_body("random", arch, n, device, seed=seed), f"its random init (seed {seed}, rebuilt)"
    return None, f"it started from a weights file ({loaded.removeprefix('file:') or 'unknown'}) this page cannot rebuild"


def saved_before_unfreeze(run: dict) -> int | None:
    """The best epoch, when it fell in a head-only phase of the run's schedule (so the saved
    body is its start whatever later epochs did), else None.  A run keeps its best epoch's
    weights: on few photos a head-only epoch often ties the fine-tuned ones and stays."""
    best = (run.get("summary") or {}).get("best_epoch")
    phases = (run.get("summary") or {}).get("phases") or []
    end = 0
    for phase in phases:
        if not isinstance(phase, dict) or not isinstance(phase.get("epochs"), int):
            return None
        end += phase["epochs"]
        if isinstance(best, int) and best <= end:
            return best if phase.get("freeze") == "backbone" and len(phases) > 1 else None
    return None


def _params_of(model, paths: list[str]) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if any(n == q or n.startswith(q + ".") for q in paths)}


def weight_change(after: torch.nn.Module, start: torch.nn.Module, arch: str) -> list[dict]:
    """Per stage, input first: {"stage", "params", "rel_change"} (None for a stage without
    parameters).  A parameter is counted in the first stage that lists it."""
    rows, seen = [], set()
    start_params = dict(start.named_parameters())
    for name, paths in stages_of(after, arch):
        own = {n: p for n, p in _params_of(after, paths).items() if n not in seen}
        seen.update(own)
        diff = sum(float((p.double() - start_params[n].detach().double().to(p.device)).pow(2).sum()) for n, p in own.items())
        base = sum(float(start_params[n].detach().double().pow(2).sum()) for n in own)
        rows.append({"stage": name, "params": sum(p.numel() for p in own.values()),
                     "rel_change": math.sqrt(diff) / math.sqrt(base) if base > 0 else None})
    return rows


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n examples (n x d1, n x d2)."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    xy = (y.T @ x).pow(2).sum()
    xx, yy = (x.T @ x).pow(2).sum().sqrt(), (y.T @ y).pow(2).sum().sqrt()
    return float(xy / (xx * yy)) if float(xx * yy) > 0 else float("nan")


def stage_outputs(body: Body, samples, spec, device: torch.device, cache: FeatureCache | None = None,
                  progress=None, stop=None) -> dict[str, torch.Tensor]:
    """Each stage's pooled output (n x channels) for ``samples`` in the evaluation view of
    ``spec``, through the shared cache (keyed by the whole body's tensors, so the ImageNet
    start's outputs are computed once for every run that started from it)."""
    model, arch = body.model, body.arch
    infer_bs = inference_batch_size(device, arch)

    def compute():
        source = BatchSource(samples, spec, False, infer_bs, stop=stop)
        got: dict[str, list[torch.Tensor]] = {}
        total = len(source)
        with torch.inference_mode(), feature_maps.capture(model, arch) as found:
            for k, (x, _) in enumerate(source):
                found.clear()
                model(x.to(device).contiguous(memory_format=torch.channels_last))
                for name, out in found.items():
                    got.setdefault(name, []).append(feature_maps.pooled(out, arch).cpu())
                if progress:
                    progress({"phase": "stages", "done": k + 1, "total": total})
                if stop is not None and stop.is_set():
                    from core.data.batches import Stopped
                    raise Stopped
        return {name: torch.cat(parts) for name, parts in got.items()}
    if cache is None:
        return compute()
    heads = head_paths(model, arch)
    state = {k: v for k, v in model.state_dict().items() if not any(k.startswith(h + ".") for h in heads)}
    key = feature_key(kind="inside-stages", arch=arch, body=tensors_digest(state), spec=spec.to_dict(),
                      files=files_signature(samples), device=device.type, torch=torch.__version__, batch=infer_bs)
    value, _ = cache.get_or_compute(key, compute)
    return value


def stage_outputs_cached(body: Body, samples, spec, device, cache: FeatureCache) -> bool:
    """Whether ``stage_outputs`` would run nothing (for the page's cost note)."""
    heads = head_paths(body.model, body.arch)
    state = {k: v for k, v in body.model.state_dict().items() if not any(k.startswith(h + ".") for h in heads)}
    key = feature_key(kind="inside-stages", arch=body.arch, body=tensors_digest(state), spec=spec.to_dict(),
                      files=files_signature(samples), device=device.type, torch=torch.__version__,
                      batch=inference_batch_size(device, body.arch))
    return cache.contains(key)


def change_table(run_body: Body, start: Body, samples=None, device=None, cache=None, progress=None,
                 stop=None) -> list[dict]:
    """``weight_change`` rows, each with ``cka`` when ``samples`` (photos) are given."""
    rows = weight_change(run_body.model, start.model, run_body.arch)
    if samples:
        after = stage_outputs(run_body, samples, run_body.spec, device, cache, progress, stop)
        before = stage_outputs(start, samples, run_body.spec, device, cache, progress, stop)
        for row in rows:
            name = row["stage"]
            row["cka"] = linear_cka(before[name], after[name]) if name in after and name in before else None
    return rows
