"""Using a finished run: classify images, and evaluate it on its validation split.

Predictions run on the fastest backend that means the same: a run's ONNX export under
onnxruntime where one exists and passed its parity check (the run's own validation
photos, top-1 identical, logits within 1e-3 of their scale), else the BatchNorm-folded
PyTorch model.  On this project's 2-core CPU onnxruntime classified a photo 3.8x faster.
Grad-CAM always uses the PyTorch model: it needs gradients."""
from __future__ import annotations

import contextlib
import math
import os
from collections import OrderedDict
import threading
from pathlib import Path

import torch
from torchvision.transforms import InterpolationMode

from core.device import pick_device
from core.errors import RunError
from core.data.images import ImageReadError, load_rgb
from core.models.inference import fused_for_inference, is_view_of
from core.serving.export_files import cached_export
from core.runs.store import WEIGHTS, load_run, load_weights
from core.data.transforms import TransformSpec, eval_transform
from core.models.zoo import ModelSpec, instantiate, list_architectures


def load_model(run: dict, device: torch.device, spec: ModelSpec | None = None):
    """The run's network with its best weights, in eval mode on ``device``; a model that
    cannot be built, or weights that do not fit it, are a RunError naming the run."""
    spec = spec or checked_config(run)[0]
    try:
        model = instantiate(spec)
    except Exception as e:  # noqa: BLE001 - torchvision's builders reject odd build arguments in many ways
        raise RunError(f"run {run['name']!r} is damaged: config.json describes a model that cannot be built "
                       f"({_clause(e)})") from None
    try:
        state = OrderedDict(load_weights(run["dir"]))
        # Some modules (MNASNet) read their version from the state_dict's metadata, which
        # .safetensors does not keep: the freshly built model's is the right one.
        state._metadata = getattr(model.state_dict(), "_metadata", None)
        model.load_state_dict(state)  # strict: every tensor, every shape
    except (RuntimeError, ValueError) as e:
        raise RunError(f"run {run['name']!r} is damaged: {WEIGHTS} does not fit the model its config.json "
                       f"describes ({_clause(e)})") from None
    return model.to(device, memory_format=torch.channels_last).eval()


def _clause(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def checked_config(run: dict) -> tuple[ModelSpec, TransformSpec]:
    """The model and transform a run's config.json describes, or a RunError saying
    which field is wrong: a hand-edited or damaged config must not surface as a
    KeyError or TypeError from deep inside torchvision."""
    name, config = run["name"], run["config"]

    def bad(why: str):
        raise RunError(f"run {name!r} is damaged: config.json {why}")
    model, tf = config.get("model"), config.get("transform")
    if not isinstance(model, dict) or not isinstance(tf, dict):
        bad("lacks its model or transform section")
    try:
        spec = ModelSpec(**model)
    except TypeError:
        bad(f"has missing or unknown model fields (it has: {', '.join(sorted(map(str, model)))[:160]})")
    if not isinstance(spec.arch, str) or spec.arch not in list_architectures():
        bad(f"names an unknown architecture {spec.arch!r}")
    if type(spec.num_classes) is not int or spec.num_classes != len(run["classes"]):
        bad(f"says {spec.num_classes!r} classes but classes.json lists {len(run['classes'])}")
    if spec.num_classes > 100_000:  # a cap far above any real run: a damaged file must not ask for terabytes
        bad(f"says {spec.num_classes:,} classes, more than a run here can have")
    if type(spec.hidden) is not int or not 0 <= spec.hidden <= 65_536 or not _number(spec.dropout) \
            or not 0 <= spec.dropout < 1:
        bad("has a hidden size or dropout out of range")
    if not isinstance(spec.build_kwargs, dict):
        bad("has malformed build arguments")
    sizes_ok = all(type(tf.get(k)) is int and 0 < tf[k] <= 4096 for k in ("crop_size", "resize_size"))
    stats_ok = all(isinstance(tf.get(k), list) and len(tf[k]) == 3 and all(_number(v) for v in tf[k]) for k in ("mean", "std"))
    interpolation = tf.get("interpolation", "bilinear")
    if not sizes_ok or not stats_ok or not all(v > 0 for v in tf["std"]) \
            or not isinstance(interpolation, str) or interpolation not in {m.value for m in InterpolationMode}:
        bad("has a malformed transform (sizes, mean, std or interpolation)")
    return spec, TransformSpec.from_dict(tf)


def onnx_session(run_dir):
    """An onnxruntime session of the run's checked ONNX export, or None (none exported, or
    onnxruntime missing or refusing the file: the PyTorch model then serves, as before)."""
    report = cached_export(run_dir, "onnx")
    if report is None:
        return None
    try:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # a shared server (app.py): no spinning
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(report["path"], so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - ImportError, a damaged file, an operator this onnxruntime lacks
        return None


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


class Predictor:
    """Classifies PIL images or files with a run's model and evaluation transforms."""

    def __init__(self, run_dir, device: str = "auto"):
        self.run = load_run(run_dir)  # RunError for a missing, incomplete or unreadable run
        self.device = pick_device(device)
        self.classes: list[str] = self.run["classes"]
        model_spec, self.spec = checked_config(self.run)
        self.transform = eval_transform(self.spec)
        self.model = load_model(self.run, self.device, model_spec)  # for Grad-CAM, which needs gradients
        self.fast_model = fused_for_inference(self.model)   # for predictions
        # The dashboard shares one Predictor between tabs; Grad-CAM puts hooks on
        # self.model, so two explanations at once would see each other's activations.
        self.cam_lock = threading.Lock()
        # Where nothing folds (SqueezeNet, ViTs) fast_model is self.model itself: a prediction
        # during an explanation ran through its hooks (an inference tensor cannot take a
        # gradient hook) and fed it the wrong activations.  There predictions take the same
        # lock (an explanation is one forward and backward); a folded copy needs none.
        self._predict_lock = self.cam_lock if is_view_of(self.fast_model, self.model) else contextlib.nullcontext()
        self.session = onnx_session(run_dir) if self.device.type == "cpu" else None
        self.backend = "onnxruntime (checked ONNX export)" if self.session else "PyTorch (BatchNorm folded)"

    @torch.inference_mode()
    def probabilities(self, images) -> torch.Tensor:
        x = torch.stack([self.transform(img) for img in images])
        if self.session is not None:
            logits = torch.from_numpy(self.session.run(None, {self.session.get_inputs()[0].name: x.numpy()})[0])
        else:
            with self._predict_lock:
                logits = self.fast_model(x.to(self.device).contiguous(memory_format=torch.channels_last))
        return torch.softmax(logits.float(), dim=1).cpu()

    def predict(self, image, topk: int = 3) -> list[dict]:
        """Top-k [{"label", "prob"}] for one PIL image (or path / file object)."""
        if not hasattr(image, "mode"):
            image = load_rgb(image)
        probs = self.probabilities([image])[0]
        k = min(topk, len(self.classes))
        values, idx = probs.topk(k)
        return [{"label": self.classes[i], "prob": float(v)} for v, i in zip(values.tolist(), idx.tolist())]


@torch.inference_mode()
def evaluate(run_dir, device: str = "auto", batch_size: int = 64) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and the misclassified files of a run
    on its own validation split (the files recorded in split.json)."""
    p = Predictor(run_dir, device)
    split = p.run.get("split") or {}
    if not split.get("root") or not isinstance(split.get("val"), list):
        where = " (it was imported: they stayed on the machine it was trained on)" if p.run["config"].get("imported") else ""
        raise RunError(f"run {p.run['name']!r} has no validation images on this machine{where}")
    root = Path(split["root"])
    n = len(p.classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    rows, missing = [], []
    batch: list = []

    def flush():
        probs = p.probabilities([img for img, _, _ in batch])
        for (img, rel, y), pr in zip(batch, probs):
            pred = int(pr.argmax())
            confusion[y, pred] += 1
            rows.append({"path": str(root / rel), "true": p.classes[y], "pred": p.classes[pred], "prob": float(pr[pred])})
        batch.clear()
    for rel, y in split["val"]:
        try:
            batch.append((load_rgb(root / rel), rel, y))
        except (ImageReadError, OSError):
            missing.append(str(root / rel))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    total = int(confusion.sum())
    per_class = {c: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None) for i, c in enumerate(p.classes)}
    return {"accuracy": float(confusion.diag().sum()) / total if total else 0.0, "per_class": per_class,
            "confusion": confusion.tolist(), "classes": p.classes, "predictions": rows,
            "misclassified": [r for r in rows if r["true"] != r["pred"]], "unreadable": missing}


def explain(predictor: Predictor, image, class_index: int):
    """Grad-CAM overlay of ``class_index`` on the (center-cropped) image, or None."""
    from core.serving.gradcam import gradcam, overlay
    from torchvision.transforms import v2 as T
    x = predictor.transform(image).unsqueeze(0).to(predictor.device)
    with predictor.cam_lock:
        cam = gradcam(predictor.model, predictor.run["config"]["arch"], x, class_index)
    if cam is None:
        return None
    view = T.CenterCrop(predictor.spec.crop_size)(T.Resize(predictor.spec.resize_size)(image))
    return overlay(view, cam)
