"""One row of data per torchvision architecture family: where its head is, how its body
divides into stages, where Grad-CAM looks.  Surgery, freezing and summaries read this
table instead of branching on model names (timm's ``get_classifier`` idea, as data).

A stage is ``(name, [module paths])``; freezing "the first N stages" walks this list.
Unknown models fall back to: head = the last ``nn.Linear``, stages = top-level children.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

Stages = list[tuple[str, list[str]]]


@dataclass(frozen=True)
class Family:
    name: str
    pattern: str                      # regex matched against the architecture name
    head: str | None                  # dotted path of the final classifier layer
    stages: Callable[[nn.Module], Stages]
    aux_heads: tuple[str, ...] = ()   # GoogLeNet / Inception auxiliary classifiers
    cam_layer: str | None = None      # last convolutional block, for Grad-CAM
    pretrained_kwargs: dict = field(default_factory=dict)  # builder args the ImageNet weights need
    build_kwargs: dict = field(default_factory=dict)


def named(*groups: tuple[str, list[str]]) -> Callable[[nn.Module], Stages]:
    return lambda model: [(n, list(p)) for n, p in groups]


def children_of(path: str, extra: Stages = ()) -> Callable[[nn.Module], Stages]:
    """Each child of ``path`` is a stage (EfficientNet and ConvNeXt already group them)."""
    def stages(model: nn.Module) -> Stages:
        parent = model.get_submodule(path)
        return [(f"{path}.{n}", [f"{path}.{n}"]) for n, _ in parent.named_children()] + list(extra)
    return stages


def grouped(path: str, sizes: list[int], extra: Stages = (), names: list[str] | None = None) -> Callable[[nn.Module], Stages]:
    """Consecutive children of ``path`` grouped by ``sizes`` (MobileNetV2's blocks by resolution)."""
    def stages(model: nn.Module) -> Stages:
        kids = [n for n, _ in model.get_submodule(path).named_children()]
        out, i = [], 0
        for k, size in enumerate(sizes):
            label = names[k] if names else f"{path}[{i}:{i + size}]"
            out.append((label, [f"{path}.{n}" for n in kids[i:i + size]]))
            i += size
        if i < len(kids):
            out.append((f"{path}[{i}:]", [f"{path}.{n}" for n in kids[i:]]))
        return out + list(extra)
    return stages


def split_at_pools(path: str, extra: Stages = ()) -> Callable[[nn.Module], Stages]:
    """VGG, AlexNet and SqueezeNet: a block ends at each max-pool."""
    def stages(model: nn.Module) -> Stages:
        out, current = [], []
        for n, m in model.get_submodule(path).named_children():
            current.append(f"{path}.{n}")
            if isinstance(m, nn.MaxPool2d):
                out.append((f"block{len(out) + 1}", current))
                current = []
        if current:
            out.append((f"block{len(out) + 1}", current))
        return out + list(extra)
    return stages


def _vit_stages(model: nn.Module) -> Stages:
    layers = [n for n, _ in model.encoder.layers.named_children()]
    return ([("stem", ["conv_proj", "class_token", "encoder.pos_embedding"])]
            + [(f"encoder.layers.{n}", [f"encoder.layers.{n}"]) for n in layers] + [("encoder.ln", ["encoder.ln"])])


def _fallback_stages(model: nn.Module) -> Stages:
    return [(n, [n]) for n, m in model.named_children() if any(True for _ in m.parameters())]


_RESNET = named(("stem", ["conv1", "bn1"]), ("layer1", ["layer1"]), ("layer2", ["layer2"]),
                ("layer3", ["layer3"]), ("layer4", ["layer4"]))
_INIT = {"init_weights": True}  # silences torchvision's FutureWarning; the weights overwrite it

FAMILIES: list[Family] = [
    Family("resnet", r"^(resnet|resnext|wide_resnet)", "fc", _RESNET, cam_layer="layer4"),
    Family("regnet", r"^regnet", "fc", named(("stem", ["stem"]), *[(f"block{i}", [f"trunk_output.block{i}"]) for i in range(1, 5)]),
           cam_layer="trunk_output"),
    Family("shufflenet", r"^shufflenet", "fc", named(*[(n, [n]) for n in ("conv1", "stage2", "stage3", "stage4", "conv5")]),
           cam_layer="conv5"),
    Family("vgg", r"^vgg", "classifier.6", split_at_pools("features", [("classifier", ["classifier.0", "classifier.3"])]),
           cam_layer="features"),
    Family("alexnet", r"^alexnet$", "classifier.6", split_at_pools("features", [("classifier", ["classifier.1", "classifier.4"])]),
           cam_layer="features"),
    Family("squeezenet", r"^squeezenet", "classifier.1", split_at_pools("features"), cam_layer="features"),
    Family("mobilenet_v2", r"^mobilenet_v2$", "classifier.1",
           grouped("features", [1, 1, 2, 3, 4, 3, 3, 1, 1],
                   names=["stem", "block16", "block24", "block32", "block64", "block96", "block160", "block320", "conv_last"]),
           cam_layer="features"),
    Family("mobilenet_v3", r"^mobilenet_v3", "classifier.3", children_of("features", [("classifier", ["classifier.0"])]),
           cam_layer="features"),
    Family("efficientnet", r"^efficientnet", "classifier.1", children_of("features"), cam_layer="features"),
    Family("mnasnet", r"^mnasnet", "classifier.1",
           grouped("layers", [8, 1, 1, 1, 1, 1, 1, 3], names=["stem", "stack1", "stack2", "stack3", "stack4", "stack5", "stack6", "conv_last"]),
           cam_layer="layers"),
    Family("densenet", r"^densenet", "classifier",
           named(("stem", ["features.conv0", "features.norm0"]), ("block1", ["features.denseblock1", "features.transition1"]),
                 ("block2", ["features.denseblock2", "features.transition2"]), ("block3", ["features.denseblock3", "features.transition3"]),
                 ("block4", ["features.denseblock4", "features.norm5"])), cam_layer="features"),
    Family("convnext", r"^convnext", "classifier.2", children_of("features", [("classifier", ["classifier.0"])]), cam_layer="features"),
    Family("vit", r"^vit_", "heads.head", _vit_stages),
    Family("swin", r"^swin", "head", children_of("features", [("norm", ["norm"])])),
    Family("maxvit", r"^maxvit", "classifier.5", named(("stem", ["stem"]), *[(f"blocks.{i}", [f"blocks.{i}"]) for i in range(4)],
                                                       ("classifier", ["classifier.2", "classifier.3"]))),
    Family("googlenet", r"^googlenet$", "fc",
           named(("stem", ["conv1", "conv2", "conv3"]), ("inception3", ["inception3a", "inception3b"]),
                 ("inception4", ["inception4a", "inception4b", "inception4c", "inception4d", "inception4e"]),
                 ("inception5", ["inception5a", "inception5b"]), ("aux", ["aux1", "aux2"])),
           aux_heads=("aux1.fc2", "aux2.fc2"), cam_layer="inception5b",
           pretrained_kwargs={"transform_input": True}, build_kwargs={**_INIT, "aux_logits": True}),
    Family("inception", r"^inception_v3$", "fc",
           named(("stem", ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]),
                 ("mixed5", ["Mixed_5b", "Mixed_5c", "Mixed_5d"]), ("mixed6", ["Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]),
                 ("mixed7", ["Mixed_7a", "Mixed_7b", "Mixed_7c"]), ("aux", ["AuxLogits"])),
           aux_heads=("AuxLogits.fc",), cam_layer="Mixed_7c",
           pretrained_kwargs={"transform_input": True}, build_kwargs={**_INIT, "aux_logits": True}),
]

FALLBACK = Family("other", r".*", None, _fallback_stages)


def family_of(arch: str) -> Family:
    return next((f for f in FAMILIES if re.search(f.pattern, arch)), FALLBACK)
