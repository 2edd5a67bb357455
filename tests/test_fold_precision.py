"""BatchNorm folding is checked as a function, not against the device's arithmetic: on
CUDA cuDNN runs float32 convolutions in TF32 by default, where folded and unfolded
weights round differently and the float32 check refused every fold (issue #20, finding 6).
TF32 is emulated here on the CPU: float32 inputs and weights of every convolution rounded
to its 10-bit mantissa, float32 accumulation, as cuDNN does."""
import torch
from torch import nn

from core.models.inference import check_dtype, fold_batchnorm
from core.models.zoo import build_model


def _tf32(t: torch.Tensor) -> torch.Tensor:
    if t.dtype != torch.float32:
        return t  # TF32 applies to float32 alone
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)  # round to nearest, 23 -> 10 mantissa bits


def test_the_fold_passes_its_check_under_tf32(mobilenet_file, monkeypatch):
    convolve = nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, x, w, b: convolve(self, _tf32(x), _tf32(w), b))
    model = build_model("mobilenet_v2", 2, "imagenet", seed=0).model.eval()  # trained weights: real BatchNorm scales
    probe = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    assert fold_batchnorm(model, probe, torch.float32) is None  # the control: as every fold on CUDA was refused
    assert check_dtype(torch.device("cuda")) == torch.float64 and check_dtype(torch.device("cpu")) == torch.float32
    folded = fold_batchnorm(model, probe, check_dtype(torch.device("cuda")))
    def batchnorms(m):
        return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert folded is not None and batchnorms(folded) < batchnorms(model)
    with torch.inference_mode():  # and in TF32 it computes what the unfolded model computes, to TF32's rounding
        assert torch.allclose(folded(probe), model(probe), rtol=1e-2, atol=1e-2)


def test_a_wrong_fold_is_still_refused_in_float64(mobilenet_file, monkeypatch):
    """The check in float64 still catches what it is for: a fold that changes the function."""
    import core.models.inference as inference
    model = build_model("mobilenet_v2", 2, "imagenet", seed=0).model.eval()
    probe = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))

    def wrong(conv, bn):  # forgets the BatchNorm's shift
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        fused.bias = nn.Parameter(torch.zeros_like(fused.bias))
        return fused
    monkeypatch.setattr(inference, "fuse_conv_bn_eval", wrong)
    assert fold_batchnorm(model, probe, torch.float64) is None


def test_every_batchnorm_after_a_conv_folds():
    """A conv output's readers are counted by conv outputs' ids alone: other tensors are
    freed and their ids reused, which made 31 of MobileNetV2's 52 BatchNorms look shared
    and stay unfolded (right, but slower)."""
    import torchvision
    from torch import nn
    from core.models.inference import fused_for_inference
    for arch, unfoldable in (("mobilenet_v2", 0), ("resnet18", 0), ("efficientnet_b0", 0), ("densenet121", 62)):
        model = torchvision.models.get_model(arch).eval()
        folded = fused_for_inference(model)
        assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == unfoldable, arch  # densenet: BN before conv
