"""Which device to run on, and how it is called in the UI."""
from __future__ import annotations

import contextlib
import os

import torch

from core.data.batches import workers


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA, else MPS, else CPU.  An explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but no CUDA GPU is available here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps asked for, but Apple's MPS is not available here")
    return torch.device(name)


def gpus_short(processes: int) -> str | None:
    """Why ``processes`` processes on this machine cannot have a GPU each (torchrun's
    ``--nproc_per_node``), or None when they can."""
    gpus = torch.cuda.device_count()
    if processes <= gpus:
        return None
    return (f"torchrun started {processes} processes on this machine but it has {gpus} GPU(s): use "
            f"--nproc_per_node={gpus} (one process per GPU), or --device cpu")


def device_label(device: torch.device | str = "auto") -> str:
    device = pick_device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "GPU: Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


GPU_BATCH_GFLOPS = 512  # work per eval batch on a GPU: 128 MobileNetV2s (0.3 GFLOPs each), 64 ResNet-50s (4.1)


def inference_batch_size(device: torch.device, arch: str | None = None) -> int:
    """Batch size for eval-mode passes, where it changes speed only.  Measured on a
    2-core CPU with MobileNetV2 (channels_last): 130 img/s at 4, 58 img/s at 64 --
    small batches keep activations in cache.  GPUs want large batches, but not 128 of
    every architecture: a batch's activations grow with the work per image (torchvision's
    ``_ops``, GFLOPs at the weights' own resolution), and 128 ViT-H/14s at 518 px are 130
    TFLOPs of activations where 128 MobileNetV2s are 39 GFLOPs.  So a GPU batch holds about
    ``GPU_BATCH_GFLOPS`` of work: a power of two from 8 to 128."""
    if device.type == "cpu":
        return 4
    gflops = _gflops(arch) if arch else 0.0
    if gflops <= 0:
        return 128
    fit = max(8, min(128, int(GPU_BATCH_GFLOPS / gflops)))
    return 1 << (fit.bit_length() - 1)


def _gflops(arch: str) -> float:
    from core.models.zoo import weight_versions  # the zoo imports torchvision: only when asked
    try:
        return float(weight_versions(arch)[0].meta.get("_ops") or 0.0)
    except Exception:  # noqa: BLE001 - an unknown name is the zoo's error to report, not this one's
        return 0.0


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``.  On CUDA through page-locked memory: a copy from
    ordinary memory is synchronous whatever ``non_blocking`` says, one from pinned memory
    overlaps the GPU's work on the previous batch."""
    if device.type == "cuda" and t.device.type == "cpu":
        return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)
    return t.to(device)


def configure_threads() -> None:
    """One intra-op thread per core we may use, the cores shared out among the processes
    torchrun started on this machine (LOCAL_WORLD_SIZE); more only thrashes a small machine."""
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    torch.set_num_threads(max(1, workers() // processes))


def worker_stream(device: str):
    """A context in which this thread queues its GPU work on a CUDA stream of its own (the
    queue's workers: two jobs overlap on the GPU instead of taking turns on the default
    stream).  Elsewhere it does nothing."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.stream(torch.cuda.Stream())
    return contextlib.nullcontext()


def amp_context(device: torch.device, amp: str = "auto"):
    """A factory of autocast contexts.  auto: bf16 (fp16 if unsupported) on CUDA, off on
    CPU, where fp32 stays the reference; "on" uses bf16 on CPU too."""
    enabled = amp == "on" or (amp == "auto" and device.type == "cuda")
    if not enabled or device.type == "mps":
        return contextlib.nullcontext
    dtype = torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, amp: str) -> bool:
    return device.type == "cuda" and amp in ("auto", "on") and not torch.cuda.is_bf16_supported()


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_facts() -> dict:
    """The CPU's model name and the instruction sets that decide training speed here
    (AVX2 vs AVX-512 kernels; native bf16 in AVX512-BF16 or AMX).  Benchmarks print these
    beside every figure because this project's machine changes CPU between sessions."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "threads": torch.get_num_threads(), **{f: f in flags for f in CPU_FLAGS}}


def cpu_line(facts: dict | None = None) -> str:
    facts = facts or cpu_facts()
    have = [f for f in CPU_FLAGS if facts.get(f)]
    lacks = [f for f in CPU_FLAGS if not facts.get(f)]
    return (f"{facts['model']}, {facts['threads']} threads; has {' '.join(have) or 'none of ' + ' '.join(CPU_FLAGS)}"
            + (f"; lacks {' '.join(lacks)}" if lacks else ""))
