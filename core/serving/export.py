"""Take a trained run away: ONNX, TorchScript or .safetensors, each checked before it is offered.

Every export is the whole network with the trained head.  Its input is what the run's
evaluation transform produces: a float32 NCHW batch, RGB, resized and centre-cropped to
``crop_size``, scaled to [0, 1] and normalised with the stored mean/std.  The file
carries that description, the class names, the architecture, where the weights came
from and the best validation accuracy (``metadata``), so a user needs the file alone.

An export is written beside its target, loaded back the way a user would load it (the
standalone scripts in ``snippets/``, which import nothing of ours) and compared with the
PyTorch model on the run's validation images (``parity.py``).  Only an export that
agrees is moved into place; one that disagrees is deleted and reported as failed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import threading
import time
import warnings
from pathlib import Path

import torch

from core.errors import TransferLabError
from core.models.families import family_of
from core.models.surgery import head_path
from core.runs.store import load_run, write_json
from core.serving.export_files import FORMATS, cached_export, export_path, exports_dir  # noqa: F401 - the API
from core.serving.parity import check_parity
from core.serving.predict import checked_config, load_model

SNIPPETS = Path(__file__).with_name("snippets")
SNIPPET_FILES = {"onnx": "onnx_predict.py", "torchscript": "torchscript_predict.py", "safetensors": "safetensors_predict.py"}
# What each format needs where it is used (shown on the page beside the snippet).
NEEDS = {"onnx": "onnxruntime, pillow, numpy", "torchscript": "torch, pillow, numpy",
         "safetensors": "torch, torchvision, safetensors, pillow, numpy"}
METADATA_KEY = "transferlab"
OPSET = 18
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class ExportError(TransferLabError):
    """A run could not be exported to a format, or its export disagrees with the model."""


def metadata(run: dict) -> dict:
    """What a user of the file needs to feed it and read its output."""
    spec, tf = checked_config(run)
    config, summary = run["config"], run["summary"]
    return {"format": "transferlab-export", "version": 1, "run": run["name"], "classes": run["classes"],
            "arch": spec.arch, "weights_origin": config.get("weights_loaded") or config.get("weights"),
            "best_val_acc": summary.get("best_val_acc"), "best_epoch": summary.get("best_epoch"),
            "input": {"layout": "NCHW float32 RGB, resized, centre-cropped, scaled to [0, 1], normalised",
                      "crop_size": tf.crop_size, "resize_size": tf.resize_size, "mean": list(tf.mean),
                      "std": list(tf.std), "interpolation": tf.interpolation},
            "output": "logits, one per class in the order of classes (softmax for probabilities)",
            "network": {"head": None, "hidden": spec.hidden, "dropout": spec.dropout,
                        "build_kwargs": {**family_of(spec.arch).build_kwargs, **spec.build_kwargs}},
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__.split("+")[0]}


def load_snippet(fmt: str):
    """The standalone loader a user gets for ``fmt``, imported from its file."""
    spec = importlib.util.spec_from_file_location(f"transferlab_snippet_{fmt}", SNIPPETS / SNIPPET_FILES[fmt])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snippet_text(fmt: str, file_name: str | None = None) -> str:
    """The snippet as shown on the page, with the exported file's name filled in."""
    text = (SNIPPETS / SNIPPET_FILES[fmt]).read_text(encoding="utf-8")
    default = f"model{FORMATS[fmt]}"
    return text.replace(f'MODEL = "{default}"', f"MODEL = {json.dumps(file_name or default, ensure_ascii=False)}", 1)


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:  # two tabs exporting the same run to the same format take turns
        return _locks.setdefault(str(path), threading.Lock())


def export_run(run_dir, fmt: str, out: str | os.PathLike | None = None, max_images: int | None = None) -> dict:
    """Export a finished run to ``fmt`` and check it.  Returns the report (also written
    to ``<file>.parity.json``); raises ExportError if it cannot be exported or disagrees."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")
    run = load_run(run_dir)
    target = Path(out) if out else export_path(run_dir, fmt)
    if target.is_dir():
        target = target / f"{run['name']}{FORMATS[fmt]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata(run)
    model = load_model(run, torch.device("cpu")).to(memory_format=torch.contiguous_format)
    meta["network"]["head"] = head_path(model, meta["arch"])
    with _lock(target):
        tmp = target.with_name(f".{target.name}.part")
        t0 = time.perf_counter()
        try:
            exporter = WRITERS[fmt](model, meta, tmp)
            seconds = time.perf_counter() - t0
            parity = check_parity(run, model, load_snippet(fmt).load(str(tmp))[0], max_images=max_images)
        except TransferLabError:
            tmp.unlink(missing_ok=True)
            raise
        except Exception as e:  # noqa: BLE001 - exporters fail on unsupported operators in many ways
            tmp.unlink(missing_ok=True)
            raise ExportError(f"run {run['name']!r} ({meta['arch']}) cannot be exported to {fmt}: {_clause(e)}") from None
        report = {"format": fmt, "file": target.name, "exporter": exporter, "export_seconds": round(seconds, 2),
                  "bytes": tmp.stat().st_size, "run": run["name"], "arch": meta["arch"], **parity}
        write_json(target.with_name(target.name + ".parity.json"), report)
        if not parity["ok"]:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"the {fmt} export of run {run['name']!r} disagrees with the model, so it is not "
                              f"offered: {parity['summary']}")
        os.replace(tmp, target)
    return {**report, "path": str(target)}


def _clause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "…" if len(text) > 300 else text) or type(e).__name__


def _example(meta: dict) -> torch.Tensor:
    size = meta["input"]["crop_size"]
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def write_onnx(model: torch.nn.Module, meta: dict, path: Path) -> str:
    """torch.export-based exporter (PyTorch's supported one); the legacy TorchScript-based
    exporter only where torch.export cannot capture the model.  Batch size is dynamic."""
    import onnx
    x = _example(meta)
    quiet = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, opset_version=OPSET,
                              input_names=["input"], output_names=["logits"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
        exporter = "torch.export"
    except Exception:  # noqa: BLE001 - a graph break or an operator torch.export cannot capture
        path.unlink(missing_ok=True)
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        exporter = "torch.onnx legacy (TorchScript-based)"
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps({**meta, "exporter": exporter}, ensure_ascii=False)})
    onnx.save(proto, str(path))
    return exporter


def write_torchscript(model: torch.nn.Module, meta: dict, path: Path) -> str:
    """A traced module (no Python needed to run it).  PyTorch marks TorchScript
    deprecated; it still loads in any torch 2.x and in LibTorch (C++)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(meta), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"transferlab.json": json.dumps(meta, ensure_ascii=False)})
    return "torch.jit.trace"


def write_safetensors(model: torch.nn.Module, meta: dict, path: Path) -> str:
    """The whole state_dict, with what rebuilding the network needs in the metadata."""
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta, ensure_ascii=False)})
    return "safetensors"


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "safetensors": write_safetensors}
