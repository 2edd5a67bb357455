"""Using a finished run: classify images, and evaluate it on its validation split."""
from __future__ import annotations

from pathlib import Path

import torch

from .device import pick_device
from .images import ImageReadError, load_rgb
from .inference import fused_for_inference
from .runs import load_run, load_weights
from .transforms import TransformSpec, eval_transform
from .zoo import ModelSpec, instantiate


def load_model(run: dict, device: torch.device):
    """The run's network with its best weights, in eval mode on ``device``."""
    spec = ModelSpec(**run["config"]["model"])
    model = instantiate(spec)
    model.load_state_dict(load_weights(run["dir"]))
    return model.to(device, memory_format=torch.channels_last).eval()


class Predictor:
    """Classifies PIL images or files with a run's model and evaluation transforms."""

    def __init__(self, run_dir, device: str = "auto"):
        self.run = load_run(run_dir)
        self.device = pick_device(device)
        self.classes: list[str] = self.run["classes"]
        self.spec = TransformSpec.from_dict(self.run["config"]["transform"])
        self.transform = eval_transform(self.spec)
        self.model = load_model(self.run, self.device)     # for Grad-CAM, which needs gradients
        self.fast_model = fused_for_inference(self.model)   # for predictions

    @torch.inference_mode()
    def probabilities(self, images) -> torch.Tensor:
        x = torch.stack([self.transform(img) for img in images]).to(self.device)
        return torch.softmax(self.fast_model(x.contiguous(memory_format=torch.channels_last)).float(), dim=1).cpu()

    def predict(self, image, topk: int = 3) -> list[dict]:
        """Top-k [{"label", "prob"}] for one PIL image (or path / file object)."""
        if not hasattr(image, "mode"):
            image = load_rgb(image)
        probs = self.probabilities([image])[0]
        k = min(topk, len(self.classes))
        values, idx = probs.topk(k)
        return [{"label": self.classes[i], "prob": float(v)} for v, i in zip(values.tolist(), idx.tolist())]

    def predict_files(self, files, topk: int = 3) -> list[dict]:
        """One entry per file; a bad file gets {"error": reason} and the others still run."""
        out = []
        for f in files:
            try:
                out.append({"image": str(f), "top": self.predict(load_rgb(f), topk)})
            except (ImageReadError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
                reason = str(e) if isinstance(e, ImageReadError) else f"cannot open: {e.strerror}"
                out.append({"image": str(f), "error": reason})
        return out


@torch.inference_mode()
def evaluate(run_dir, device: str = "auto", batch_size: int = 64) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and the misclassified files of a run
    on its own validation split (the files recorded in split.json)."""
    p = Predictor(run_dir, device)
    split = p.run["split"]
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
    from .gradcam import gradcam, overlay
    from torchvision.transforms import v2 as T
    x = predictor.transform(image).unsqueeze(0).to(predictor.device)
    cam = gradcam(predictor.model, predictor.run["config"]["arch"], x, class_index)
    if cam is None:
        return None
    view = T.CenterCrop(predictor.spec.crop_size)(T.Resize(predictor.spec.resize_size)(image))
    return overlay(view, cam)
