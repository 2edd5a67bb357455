"""Looking inside on the real photos: the pretrained body separates ants from bees before
any head is trained, far better than the same network at random init; features are
extracted once and shared with training both ways; the per-stage change of a run."""
import pytest
import torch

from core.data.datasets import scan_dataset
from core.inside import change, separability
from core.inside.features import build_body, extract, is_cached, run_body
from core.models.surgery import freeze
from core.models.zoo import build_model
from core.runs.store import load_run
from core.training import features as tail_features
from core.training.feature_cache import FeatureCache
from core.training.trainer import TrainConfig, Trainer
from tests.conftest import ANTS_BEES, MOBILENET_FILE

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def ants_bees_features(tmp_path_factory):
    """ImageNet and random-init features of the ants/bees photos, extracted once per test
    session into a cache on disk (the CLI tests point a data folder at it)."""
    if ANTS_BEES is None or MOBILENET_FILE is None or not MOBILENET_FILE.is_file():
        pytest.skip("the ants/bees photos or the MobileNetV2 weights are absent from ../shared")
    data_dir = tmp_path_factory.mktemp("inside-data")
    cache = FeatureCache(disk_dir=data_dir / "features")
    ds = scan_dataset(ANTS_BEES)
    out = {}
    for kind in ("imagenet", "random"):
        body = build_body(kind, "mobilenet_v2", len(ds.classes), CPU, seed=0)
        out[kind] = (body, extract(body, ds.train, ds.val, None, CPU, cache))
    return ds, cache, data_dir, out


def count_body_passes(monkeypatch) -> list:
    """Every call that runs images through a body up to the tail (training's and ours)."""
    calls = []
    real = tail_features.tail_inputs

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(tail_features, "tail_inputs", counting)
    return calls


def test_pretrained_body_separates_ants_and_bees_better_than_random_init(ants_bees_features):
    ds, _, _, out = ants_bees_features
    got = {kind: separability.measure(f) for kind, (_, f) in out.items()}
    for kind, m in got.items():
        print(f"{kind}: k-NN {m['knn_acc']:.3f}, linear probe {m['linear_probe_acc']:.3f} "
              f"({m['num_train']} train, {m['num_val']} val)")
    assert got["imagenet"]["num_train"] == len(ds.train) == 245 and got["imagenet"]["num_val"] == 153
    assert got["imagenet"]["knn_acc"] >= 0.90
    assert got["imagenet"]["knn_acc"] - got["random"]["knn_acc"] >= 0.15
    assert got["imagenet"]["linear_probe_acc"] - got["random"]["linear_probe_acc"] >= 0.15


def test_features_come_from_the_cache_and_training_reuses_them(ants_bees_features, monkeypatch):
    ds, cache, _, out = ants_bees_features
    body, first = out["imagenet"]
    calls = count_body_passes(monkeypatch)
    assert is_cached(body, ds.train, ds.val, None, CPU, cache)
    again = extract(body, ds.train, ds.val, None, CPU, cache)
    assert calls == [] and (again.hits, again.computed) == (2, 0)
    assert torch.equal(again.val, first.val) and torch.equal(again.train, first.train)
    # A frozen run of the same photos, weights and seed takes the Inside page's features:
    # not one image through the body.
    built = build_model("mobilenet_v2", len(ds.classes), "imagenet", seed=0)
    freeze(built.model, "mobilenet_v2", "backbone")
    result = Trainer(built.model, "mobilenet_v2", ds.train, ds.val, built.transform, TrainConfig(epochs=1), CPU,
                     feature_cache=cache, freeze="backbone").fit()
    assert result.path == "frozen-features" and result.feature_hits == 2 and calls == []


def test_inside_reuses_what_a_frozen_run_extracted(tiny_split, monkeypatch, mobilenet_file):
    """The other direction: train first, then look inside, with no second extraction."""
    ds = scan_dataset(tiny_split)
    cache = FeatureCache()
    built = build_model("mobilenet_v2", 2, "imagenet", seed=0)
    freeze(built.model, "mobilenet_v2", "backbone")
    Trainer(built.model, "mobilenet_v2", ds.train, ds.val, built.transform, TrainConfig(epochs=1, batch_size=8), CPU,
            feature_cache=cache, freeze="backbone").fit()
    body = build_body("imagenet", "mobilenet_v2", 2, CPU)
    calls = count_body_passes(monkeypatch)
    assert is_cached(body, ds.train, ds.val, TrainConfig(batch_size=8), CPU, cache)
    feats = extract(body, ds.train, ds.val, TrainConfig(epochs=1, batch_size=8), CPU, cache)
    assert calls == [] and feats.hits == 2
    # Another seed is another augmented view: that one is computed (the key follows the seed).
    assert not is_cached(body, ds.train, ds.val, TrainConfig(seed=1), CPU, cache)


def _run(data, runs_dir, name, weights, freeze_, **train):
    from core.training.experiment import ExperimentConfig, run_experiment
    cfg = ExperimentConfig(data=str(data), arch="mobilenet_v2", weights=weights, freeze=freeze_, name=name,
                           train=TrainConfig(batch_size=8, **train))
    run_dir, _, _ = run_experiment(cfg, runs_dir=runs_dir)
    return load_run(run_dir)


def test_per_stage_table_of_a_frozen_and_a_fine_tuned_run(tiny_split, tmp_path, mobilenet_file):
    ds = scan_dataset(tiny_split)
    cache = FeatureCache()
    frozen = _run(tiny_split, tmp_path, "frozen", "imagenet", "backbone", epochs=1)
    start, what = change.start_of(frozen, CPU)
    assert what.startswith("ImageNet weights")
    rows = change.change_table(run_body(frozen, CPU), start, ds.val, CPU, cache)
    names = [r["stage"] for r in rows]
    assert names == ["stem", "block16", "block24", "block32", "block64", "block96", "block160", "block320", "conv_last"]
    assert all(r["rel_change"] == 0 for r in rows)  # a frozen body is its start, bit for bit
    assert all(r["cka"] == pytest.approx(1.0, abs=1e-6) for r in rows)

    tuned = _run(tiny_split, tmp_path, "tuned", "imagenet", "none", epochs=1)  # everything trains, every epoch
    rows = change.change_table(run_body(tuned, CPU), change.start_of(tuned, CPU)[0], ds.val, CPU, cache)
    print("fine-tuned on 16 photos:", [(r["stage"], f"{r['rel_change']:.2e}", f"{r['cka']:.4f}") for r in rows])
    assert [r["stage"] for r in rows] == names
    assert all(r["rel_change"] > 0 for r in rows)
    assert all(0 < r["cka"] <= 1 + 1e-9 for r in rows)


def test_a_best_epoch_before_the_unfreeze_is_named():
    """A fine_tune run keeps its best epoch: if that was head-only, its body never moved."""
    phases = [{"name": "frozen", "epochs": 1, "freeze": "backbone"}, {"name": "unfrozen", "epochs": 2, "freeze": None}]
    run = {"summary": {"best_epoch": 1, "phases": phases}}
    assert change.saved_before_unfreeze(run) == 1
    assert change.saved_before_unfreeze({"summary": {"best_epoch": 3, "phases": phases}}) is None
    one_phase = [{"name": "train", "epochs": 3, "freeze": None}]
    assert change.saved_before_unfreeze({"summary": {"best_epoch": 1, "phases": one_phase}}) is None
    assert change.saved_before_unfreeze({"summary": {}}) is None


def test_a_scratch_run_is_compared_with_its_own_random_init(tiny_split, tmp_path):
    """Weights "none": the start is the seeded init rebuilt exactly; a frozen body did not move."""
    run = _run(tiny_split, tmp_path, "scratch-frozen", "none", "backbone", epochs=1, seed=3)
    start, what = change.start_of(run, CPU)
    assert "seed 3" in what
    rows = change.weight_change(run_body(run, CPU).model, start.model, "mobilenet_v2")
    assert all(r["rel_change"] == 0 for r in rows)
