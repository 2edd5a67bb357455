"""The Inside page's pictures for every family of the table, on random weights at small
input: the first convolution's filters, a map per stage, pooled stage outputs and their
CKA, the per-stage weight change, and pooled features through the extraction path."""
import copy

import pytest
import torch

from core.data.datasets import scan_dataset
from core.data.transforms import TransformSpec
from core.inside import change, feature_maps, filters, separability
from core.inside.features import Body, extract
from core.models.families import family_of
from core.models.surgery import stages_of
from core.models.zoo import ModelSpec, instantiate
from core.training.feature_cache import FeatureCache

CPU = torch.device("cpu")
# One small member per family (16 families; the table's VGG is left out for its 130M
# parameters, MaxViT and Inception v3 for their fixed or large input sizes).  ViT needs
# its 224-pixel input; every other network runs at 64.
ARCHS = {"resnet": "resnet18", "regnet": "regnet_y_400mf", "shufflenet": "shufflenet_v2_x0_5", "alexnet": "alexnet",
         "squeezenet": "squeezenet1_1", "mobilenet_v2": "mobilenet_v2", "mobilenet_v3": "mobilenet_v3_small",
         "efficientnet": "efficientnet_b0", "mnasnet": "mnasnet0_5", "densenet": "densenet121",
         "convnext": "convnext_tiny", "swin": "swin_t", "googlenet": "googlenet", "vit": "vit_b_16"}


def _size(arch: str) -> int:
    return 224 if arch.startswith("vit") else 64


@pytest.fixture(scope="module")
def models():
    out = {}
    for fam, arch in ARCHS.items():
        torch.manual_seed(0)
        out[fam] = instantiate(ModelSpec(arch, 3)).eval()
    return out


def test_the_table_has_at_least_ten_families_here():
    assert len(ARCHS) >= 10
    assert all(family_of(arch).name == fam for fam, arch in ARCHS.items())


@pytest.mark.parametrize("fam", list(ARCHS))
def test_first_conv_filters_and_stage_maps(models, fam):
    arch, model = ARCHS[fam], models[fam]
    path, weight = filters.first_conv(model)
    assert weight.shape[1] == 3, path  # the convolution that reads pixels
    facts = filters.describe(weight)
    img = filters.tiles(weight)
    assert img.width > 0 and img.height > 0 and facts["filters"] == weight.shape[0]
    if facts["smoothness"] is not None:
        assert -1 <= facts["smoothness"] <= 1
    x = torch.rand(1, 3, _size(arch), _size(arch))
    maps = feature_maps.stage_maps(model, arch, x)
    names = [n for n, _ in stages_of(model, arch)]
    assert len(maps) >= 3, [n for n, _ in maps]
    assert [n for n, _ in maps] == [n for n in names if n in dict(maps)]  # input first, in the table's order
    for _, fmap in maps:
        assert fmap.dim() == 3 and fmap.shape[0] >= 1
    strip = feature_maps.strip(maps[-1][1], 4, 32)
    assert strip.height > 0 and strip.width > strip.height  # several channels side by side


@pytest.mark.parametrize("fam", list(ARCHS))
def test_stage_change_and_cka_against_itself(models, fam):
    arch, model = ARCHS[fam], models[fam]
    rows = change.weight_change(model, model, arch)
    assert [r["stage"] for r in rows] == [n for n, _ in stages_of(model, arch)]
    assert all(r["rel_change"] in (0.0, None) for r in rows)
    assert sum(r["params"] for r in rows) > 0
    other = copy.deepcopy(model)  # the first stage's first parameter moved, nothing else
    paths = stages_of(other, arch)[0][1]
    first = next(p for n, p in other.named_parameters() if any(n == q or n.startswith(q + ".") for q in paths))
    with torch.no_grad():
        first.add_(0.1)
    changed = change.weight_change(other, model, arch)
    assert changed[0]["rel_change"] > 0 and all(r["rel_change"] in (0.0, None) for r in changed[1:])
    x = torch.rand(4, 3, _size(arch), _size(arch))
    with torch.inference_mode(), feature_maps.capture(model, arch) as found:
        model(x)
    assert len(found) >= 3
    for out in found.values():
        pooled = feature_maps.pooled(out, arch)
        assert pooled.shape[0] == 4
        if pooled.std(0).max() > 0:
            assert change.linear_cka(pooled, pooled) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("fam", ["resnet", "squeezenet", "mobilenet_v3", "googlenet", "convnext", "densenet",
                                 "shufflenet", "efficientnet", "mnasnet", "regnet"])
def test_pooled_features_of_a_dataset(models, fam, tiny_split):
    """Through ``extract``: the frozen path's cut where there is one, the head's input in
    eval mode where there is not (GoogLeNet's auxiliary heads); one vector per photo."""
    arch = ARCHS[fam]
    ds = scan_dataset(tiny_split)
    body = Body("random init", "random", arch, models[fam], TransformSpec(crop_size=64, resize_size=72), "none")
    cache = FeatureCache()
    feats = extract(body, ds.train, ds.val, None, CPU, cache)
    assert feats.train.shape[0] == len(ds.train) and feats.val.shape[0] == len(ds.val)
    assert feats.train.dim() == 2 and feats.train.shape[1] == feats.val.shape[1]
    assert feats.train_view == ("evaluation view" if fam == "googlenet" else "augmented view 0")
    m = separability.measure(feats)
    assert 0 <= m["knn_acc"] <= 1 and 0 <= m["linear_probe_acc"] <= 1 and m["pca"].shape == (len(ds.train) + len(ds.val), 2)
    again = extract(body, ds.train, ds.val, None, CPU, cache)
    assert again.hits == 2 and torch.equal(again.val, feats.val)
