"""Reading weight files safely, and partial loading with an honest report."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from core.models.checkpoint import read_state_dict
from core.errors import WeightsError
from core.models.zoo import build_model


def test_real_mobilenet_file_into_two_classes(mobilenet_file):
    built = build_model("mobilenet_v2", 2, weights=str(mobilenet_file))
    r = built.load_report
    assert r.backbone_loaded == r.backbone_total == 312          # every body tensor
    assert {s["name"] for s in r.skipped_shape} == {"classifier.1.weight", "classifier.1.bias"}
    assert set(r.missing) == {"classifier.1.weight", "classifier.1.bias"}  # the new head stays random
    assert r.unexpected == []
    assert r.counts() == {"loaded": 312, "skipped_shape": 2, "missing": 2, "unexpected": 0}
    file_state = torch.load(mobilenet_file, weights_only=True)
    assert torch.equal(built.model.features[3].conv[0][0].weight, file_state["features.3.conv.0.0.weight"])


def test_imagenet_resolves_the_local_v1_file_and_its_transforms(mobilenet_file):
    built = build_model("mobilenet_v2", 2, weights="imagenet")
    assert built.weights == "imagenet:IMAGENET1K_V1"
    assert (built.transform.resize_size, built.transform.crop_size) == (256, 224)  # V1's own, not V2's 232


def test_wrapped_module_prefixed_checkpoint_loads(tmp_path, mobilenet_file):
    state = torch.load(mobilenet_file, weights_only=True)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    f = tmp_path / "ddp.pth"
    torch.save(wrapped, f)
    built = build_model("mobilenet_v2", 2, weights=str(f))
    assert built.load_report.backbone_loaded == 312


def test_safetensors_file_loads(tmp_path):
    src = build_model("resnet18", 2, weights="none").model
    f = tmp_path / "r.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    built = build_model("resnet18", 7, weights=str(f))
    assert built.load_report.counts()["skipped_shape"] == 2
    assert torch.equal(built.model.conv1.weight, src.conv1.weight)


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    f = tmp_path / "evil.pth"
    with open(f, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    with pytest.raises(WeightsError, match="needs code to load"):
        read_state_dict(f)
    assert not marker.exists()


def test_wrong_architecture_is_refused(tmp_path):
    f = tmp_path / "resnet.pth"
    torch.save(build_model("resnet18", 2, weights="none").model.state_dict(), f)
    with pytest.raises(WeightsError, match=r"does not fit mobilenet_v2: 0 of 31\d tensors matched"):
        build_model("mobilenet_v2", 2, weights=str(f))


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        read_state_dict(bad)
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    notdict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(WeightsError, match="holds no state_dict"):
        read_state_dict(notdict)


def test_missing_imagenet_weights_name_the_file_and_url():
    with pytest.raises(WeightsError) as e:
        build_model("resnet18", 2, weights="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
