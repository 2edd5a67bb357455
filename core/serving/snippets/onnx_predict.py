"""Classify a photo with a model exported from transferlab as ONNX.

Needs no transferlab: pip install onnxruntime pillow numpy
Usage: python onnx_predict.py PHOTO [MODEL]
The class names, input size and mean/std travel inside the .onnx file (metadata).
This file stands alone (a user copies it beside the model); its preprocessing is the
same in each format's snippet on purpose, and tests check it against torchvision's.
"""
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

MODEL = "model.onnx"
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
            "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def load(path):
    """(run a float32 NCHW batch -> logits, metadata)."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["transferlab"])
    name = session.get_inputs()[0].name
    return (lambda batch: session.run(None, {name: batch})[0]), meta


def preprocess(photo, meta):
    """The run's evaluation transform: shorter side to resize_size, centre crop, [0, 1], normalise."""
    spec = meta["input"]
    img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    w, h = img.size
    size = spec["resize_size"]
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize(new, RESAMPLE[spec["interpolation"]])
    crop = spec["crop_size"]
    top, left = int(round((new[1] - crop) / 2.0)), int(round((new[0] - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean, std = (np.array(spec[k], dtype=np.float32).reshape(3, 1, 1) for k in ("mean", "std"))
    return ((x - mean) / std).astype(np.float32)


def main(photo, model=MODEL):
    run, meta = load(model)
    logits = run(preprocess(photo, meta)[None])[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[:3]:
        print(f"{meta['classes'][i]}\t{probs[i]:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
