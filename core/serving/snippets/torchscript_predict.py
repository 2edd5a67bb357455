"""Classify a photo with a model exported from transferlab as TorchScript.

Needs no transferlab and no torchvision: pip install torch pillow numpy
Usage: python torchscript_predict.py PHOTO [MODEL]
The class names, input size and mean/std travel inside the .pt file (transferlab.json).
This file stands alone (a user copies it beside the model); its preprocessing is the
same in each format's snippet on purpose, and tests check it against torchvision's.
"""
import json
import sys

import numpy as np
import torch
from PIL import Image, ImageOps

MODEL = "model.pt"
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
            "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def load(path):
    """(run a float32 NCHW batch -> logits, metadata)."""
    extra = {"transferlab.json": ""}
    module = torch.jit.load(path, map_location="cpu", _extra_files=extra).eval()
    meta = json.loads(extra["transferlab.json"])

    def run(batch):
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()
    return run, meta


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
    probs = torch.softmax(torch.from_numpy(run(preprocess(photo, meta)[None])[0]), dim=0)
    for p, i in zip(*probs.topk(min(3, len(probs)))):
        print(f"{meta['classes'][i]}\t{p:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
