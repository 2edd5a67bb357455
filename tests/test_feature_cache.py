"""The shared feature cache: same results as computing the features, shared across runs
and threads, keyed by what determines the features."""
import threading

import torch

from core.models import surgery
from core.data.datasets import scan_dataset
from core.training.feature_cache import FeatureCache
from core.training.trainer import TrainConfig, Trainer
from core.data.transforms import TransformSpec
from core.models.zoo import ModelSpec, instantiate

CPU = torch.device("cpu")
SPEC = TransformSpec(crop_size=32, resize_size=36)


def _frozen_model(seed=0):
    torch.manual_seed(seed)
    m = instantiate(ModelSpec("mobilenet_v3_small", 2))
    surgery.freeze(m, "mobilenet_v3_small", "backbone")
    return m


def _fit(ds, cache, seed=3, model_seed=0, views=1, model=None):
    cfg = TrainConfig(epochs=3, batch_size=8, seed=seed, feature_cache=cache is not None, feature_views=views)
    model = model or _frozen_model(model_seed)
    result = Trainer(model, "mobilenet_v3_small", ds.train, ds.val, SPEC, cfg, CPU, feature_cache=cache).fit()
    history = [{k: v for k, v in h.items() if k not in ("seconds", "val_seconds", "images_per_s")} for h in result.history]
    return result, history


def test_cached_features_give_identical_results(tiny_folders, tmp_path):
    ds = scan_dataset(tiny_folders)
    plain, h0 = _fit(ds, None)
    cache = FeatureCache(disk_dir=tmp_path / "features")
    miss, h1 = _fit(ds, cache)
    hit, h2 = _fit(ds, cache)
    assert plain.path == miss.path == hit.path == "frozen-features"
    assert (miss.feature_hits, hit.feature_hits) == (0, 2)  # val set + one training view
    assert h0 == h1 == h2
    for k, v in plain.best_state.items():
        assert torch.equal(v, hit.best_state[k]), k
    # From disk alone (a restarted server): still identical.
    _, h3 = _fit(ds, FeatureCache(disk_dir=tmp_path / "features"))
    assert h3 == h0


def test_key_follows_what_determines_features(tiny_folders, tmp_path):
    ds = scan_dataset(tiny_folders)
    cache = FeatureCache()
    _fit(ds, cache, seed=3)
    other_seed, _ = _fit(ds, cache, seed=4)
    assert other_seed.feature_hits == 1  # validation features do not depend on the seed; the augmented view does
    other_body, _ = _fit(ds, cache, model_seed=1)
    assert other_body.feature_hits == 0  # different frozen tensors: nothing shared
    # An edited photo changes the key of its split.
    from tests.conftest import write_image
    path = ds.val[0][0]
    write_image(__import__("pathlib").Path(path), (0, 255, 0))
    ds2 = scan_dataset(tiny_folders)
    edited, _ = _fit(ds2, cache, seed=3)
    assert edited.feature_hits == 1  # the training view still matches, validation is recomputed


def test_two_threads_same_key_compute_once(tiny_folders):
    ds = scan_dataset(tiny_folders)
    cache = FeatureCache()
    out = {}
    models = [_frozen_model(0), _frozen_model(0)]  # built here: torch's global RNG is not per thread

    def job(name):
        out[name] = _fit(ds, cache, model=models[name])

    threads = [threading.Thread(target=job, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each of the two keys (validation set, training view) was computed once, by whichever
    # thread got to it first; the other thread hit it.
    assert sum(r.feature_hits for r, _ in out.values()) == 2
    # (Histories may differ in the last digits: concurrent runs share torch's global RNG,
    # which is why the training queue runs one job at a time on a CPU.)
    assert all(len(h) == 3 and not r.stopped for r, h in out.values())


def test_memory_bound_evicts_oldest():
    cache = FeatureCache(max_bytes=3 * 400)
    for k in range(5):
        cache.put(str(k), {"x": torch.zeros(100)})  # 400 bytes each
    assert not cache.contains("0") and not cache.contains("1") and cache.contains("4")
