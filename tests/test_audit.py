"""The data audit on real photos: ants/bees with the issue's noise planted (10% of the
training labels flipped, 5 training photos resized and re-encoded into val, 3
Fashion-MNIST photos in train; ``tests/noisy_data.py``), and the clean ants/bees beside
it.  Features are extracted once per session into a cache on disk that the CLI tests
read too."""
import platform
import time

import pytest
import torch

from core.audit import crossval, findings
from core.audit.run import audit
from core.data.datasets import scan_dataset
from core.inside.features import build_body, cache_keys
from core.training import features as tail_features
from core.training.feature_cache import FeatureCache
from tests.conftest import ANTS_BEES, MOBILENET_FILE

CPU = torch.device("cpu")


def cpu_line() -> str:
    """The CPU model and its vector flags, printed beside every timing (the machine is shared)."""
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vec = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}, {torch.get_num_threads()} threads, flags: {', '.join(vec) or 'none of avx2/avx512/amx'}"


def build_audited(tmp_path_factory, fashion_folder):
    """(planted noise, noisy report, clean report, data dir with the cache, timings): the
    session fixture ``audited`` of conftest.py, defined there once so that every module
    shares one audit (imported into each module, it ran once per module: 23 s each)."""
    if ANTS_BEES is None or MOBILENET_FILE is None or not MOBILENET_FILE.is_file():
        pytest.skip("the ants/bees photos or the MobileNetV2 weights are absent from ../shared")
    from tests.noisy_data import build_noisy
    base = tmp_path_factory.mktemp("audit")
    planted = build_noisy(ANTS_BEES, fashion_folder, base / "noisy")
    data_dir = base / "data"
    cache = FeatureCache(disk_dir=data_dir / "features")
    noisy = scan_dataset(planted.root)
    body = build_body("imagenet", "mobilenet_v2", len(noisy.classes), CPU)
    t = time.perf_counter()
    cold = audit(noisy, body, CPU, cache)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = audit(noisy, body, CPU, cache)
    warm_s = time.perf_counter() - t
    clean_ds = scan_dataset(ANTS_BEES)
    clean = audit(clean_ds, body, CPU, cache)
    print(f"\naudit of {len(noisy.train)} + {len(noisy.val)} photos: {cold_s:.1f} s extracting, {warm_s:.2f} s cached "
          f"({cpu_line()}; shared machine); steps cached: {warm.timings}")
    return planted, cold, warm, clean, data_dir, body, noisy, cache


def test_flipped_labels_rank_first(audited):
    planted, report, *_ = audited
    k = len(planted.flipped)
    top = report.label_issues[:2 * k]
    found = {r["path"] for r in top} & set(planted.flipped)
    print(f"\nrecall of {k} flipped labels in the top {2 * k} label issues: {len(found) / k:.3f} "
          f"({len(report.label_issues)} flagged in all)")
    assert len(found) / k >= 0.8
    # The suggestion for a flipped photo is the class it came from: the other one.
    assert all(r["suggested"] != r["given"] for r in top)


def test_every_leak_is_found_and_none_on_clean_photos(audited):
    planted, report, _, clean, *_ = audited
    pairs = {(r["path"], r["other"]) for r in report.leaks}
    print(f"\nleaks: {len(pairs & set(planted.leaks))}/{len(planted.leaks)} planted found, {len(pairs)} reported; "
          f"similarities {sorted(r['similarity'] for r in report.leaks)}")
    assert pairs == set(planted.leaks)  # each with the training photo first and its val copy as "other"
    assert all(r["split"] == "train" and r["other_split"] == "val" for r in report.leaks)
    assert clean.leaks == [] and clean.near_duplicates == [] and report.near_duplicates == []


def test_other_domain_photos_are_outliers(audited):
    planted, report, _, clean, *_ = audited
    top = [r["path"] for r in report.outliers[:10]]
    hits = len(set(top) & set(planted.outliers))
    print(f"\noutliers in the top 10: {hits}/{len(planted.outliers)}; flagged {[r['path'].rsplit('/', 1)[-1] for r in report.outliers]}")
    assert hits >= 2
    # The demo ships a placeholder picture in train/ants: an outlier of the clean data too, and the only one.
    assert [r["path"].rsplit("/", 1)[-1] for r in clean.outliers] == ["imageNotFound.gif"]


def test_a_second_audit_reads_no_photo_and_shares_the_validation_entry(audited, monkeypatch):
    _, cold, warm, _, _, body, noisy, cache = audited
    assert warm.cached and not cold.cached
    assert warm.to_json()["label_issues"] == cold.to_json()["label_issues"]
    calls = []
    monkeypatch.setattr(tail_features, "tail_inputs", lambda *a, **k: calls.append(1))
    monkeypatch.setattr("core.audit.run._signature", lambda *a: calls.append(1))
    again = audit(noisy, body, CPU, cache)
    assert calls == [] and again.leaks == cold.leaks
    # The validation entry is the one a frozen run of this data reads (cache_keys is tested against prepare).
    assert cache.contains(cache_keys(body, noisy.train, noisy.val, None, CPU)[0])


def test_a_duplicate_within_a_split_is_reported_by_its_rule():
    # Three photos: a and b identical bytes, c a resized copy of a (thumbnails agree, features less so).
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6]])
    thumbs = torch.nn.functional.normalize(torch.tensor([[1.0, -1.0], [1.0, -1.0], [1.0, -0.98]]), dim=1)
    pairs = findings.same_photo_pairs(feats, thumbs, ["x", "x", "y"])
    refs = [{"path": p, "split": "train"} for p in "abc"]
    dups, leaks = findings.duplicates_and_leaks(pairs, refs)
    assert leaks == [] and [(d["path"], d["other"], d["how"]) for d in dups] == \
        [("a", "b", "identical bytes"), ("a", "c", "pixels"), ("b", "c", "pixels")]
    # Features far apart (cosine 0.5 < DUP_PIX_COS): matching thumbnails alone are two flat skies, not one photo.
    far = torch.tensor([[1.0, 0.0], [0.5, 0.866]])
    assert findings.same_photo_pairs(far, thumbs[:2], ["p", "q"]) == []


def test_cross_validation_is_out_of_sample_and_folds_are_stratified():
    labels = torch.tensor([0] * 10 + [1] * 3)
    folds = crossval.stratified_folds(labels.numpy(), 5, seed=0)
    assert sorted(folds[10:].tolist()) == [0, 1, 2]  # 3 photos of a class spread over 3 folds
    # Two clusters; one photo of cluster 0 labelled 1: out of sample, the head prefers 0 for it,
    # and no other photo gets less probability for its given label.
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 8, generator=g) + 3, torch.randn(20, 8, generator=g) - 3])
    y = torch.tensor([0] * 20 + [1] * 20)
    y[0] = 1
    probs, extra = crossval.out_of_fold(x, y, 2, seed=0, extra=x[:2])
    confidence = probs[range(len(y)), y.numpy()]
    assert probs[0].argmax() == 0 and confidence.argmin() == 0 and (probs.argmax(1) == y.numpy())[1:].all()
    assert extra.shape == (2, 2) and (extra.argmax(1) == 0).all()
    with pytest.raises(ValueError, match="at least 2"):
        crossval.out_of_fold(x[:1], y[:1], 2)
