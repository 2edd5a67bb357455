"""Head replacement and freezing across torchvision's families, with random weights."""
import pytest
import torch
from torch import nn

from core.models import surgery
from core.models.zoo import ModelSpec, instantiate

# (architecture, input size): 20 architectures from 17 families, small inputs where allowed.
ARCHS = [("resnet18", 64), ("resnext50_32x4d", 64), ("regnet_x_400mf", 64), ("shufflenet_v2_x0_5", 64),
         ("vgg11_bn", 64), ("alexnet", 64), ("squeezenet1_1", 64), ("mobilenet_v2", 64), ("mobilenet_v3_small", 64),
         ("efficientnet_b0", 64), ("mnasnet0_5", 64), ("densenet121", 64), ("convnext_tiny", 64), ("vit_b_32", 224),
         ("swin_t", 64), ("maxvit_t", 224), ("googlenet", 64), ("inception_v3", 96), ("wide_resnet50_2", 64),
         ("efficientnet_v2_s", 64)]


@pytest.mark.parametrize("arch,size", ARCHS)
def test_head_replaced_and_freezing(arch, size):
    torch.manual_seed(0)
    model = instantiate(ModelSpec(arch, 3))
    head = surgery.get_classifier(model, arch)
    assert isinstance(head, (nn.Linear, nn.Conv2d))
    assert (head.out_features if isinstance(head, nn.Linear) else head.out_channels) == 3
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3)

    surgery.freeze(model, arch, "backbone")
    heads = surgery.head_paths(model, arch)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if any(n.startswith(h + ".") for h in heads)}
    assert trainable == expected and trainable

    stages = surgery.stages_of(model, arch)
    assert len(stages) >= 2
    n = len(stages) - 1
    surgery.freeze(model, arch, n)
    summary = surgery.summarize(model, arch)
    rows = summary["stages"]
    assert all(r["trainable"] == 0 for r in rows[:n])            # first n stages frozen
    assert rows[n]["trainable"] == rows[n]["params"] > 0         # the last stage trains
    assert sum(r["params"] for r in rows) == summary["total_params"] == sum(p.numel() for p in model.parameters())
    assert summary["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_hidden_layer_head_and_summary():
    model = instantiate(ModelSpec("resnet18", 5, hidden=64, dropout=0.3))
    head = model.fc
    assert isinstance(head, nn.Sequential) and head[0].in_features == 512 and head[-1].out_features == 5
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in head)
    s = surgery.summarize(model, "resnet18")
    assert s["head"] == "fc" and s["in_features"] == 512


def test_resnet_layer4_plus_head_trains_with_n4():
    model = instantiate(ModelSpec("resnet18", 2))
    surgery.freeze(model, "resnet18", 4)  # stem, layer1..layer3 frozen
    trainable_tops = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_tops == {"layer4", "fc"}


def test_freeze_by_names_and_bad_names():
    model = instantiate(ModelSpec("resnet18", 2))
    surgery.freeze(model, "resnet18", ["stem", "layer1"])
    assert not model.conv1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad
    with pytest.raises(ValueError, match="neither a stage"):
        surgery.freeze(model, "resnet18", ["nope"])
    with pytest.raises(ValueError, match="stages"):
        surgery.freeze(model, "resnet18", 9)


def test_frozen_batchnorm_is_in_eval_mode_and_dropout_before_head_is_not():
    model = instantiate(ModelSpec("mobilenet_v2", 2))
    surgery.freeze(model, "mobilenet_v2", "backbone")
    surgery.train_mode(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.classifier[0].training and model.classifier[1].training


def test_unknown_family_falls_back_to_last_linear():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.out = nn.Linear(8, 10)

        def forward(self, x):
            return self.out(self.body(x))
    net = Net()
    surgery.reset_classifier(net, "mynet", 4)
    assert surgery.head_path(net, "mynet") == "out" and net.out.out_features == 4
