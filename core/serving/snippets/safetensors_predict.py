"""Classify a photo with weights exported from transferlab as .safetensors.

Needs no transferlab: pip install torch torchvision safetensors pillow numpy
Usage: python safetensors_predict.py PHOTO [MODEL]
The file holds the whole network's weights; its metadata says which torchvision
architecture they fit, how the new head is shaped, the class names and the input.
This file stands alone (a user copies it beside the model); its preprocessing is the
same in each format's snippet on purpose, and tests check it against torchvision's.
"""
import json
import sys

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file

MODEL = "model.safetensors"
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
            "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def new_head(old, num_classes, hidden, dropout):
    """transferlab's head: Linear (1x1 Conv for SqueezeNet), optionally hidden + ReLU + dropout."""
    conv = isinstance(old, torch.nn.Conv2d)
    n_in = old.in_channels if conv else old.in_features
    layer = (lambda i, o: torch.nn.Conv2d(i, o, kernel_size=1)) if conv else torch.nn.Linear
    if hidden:
        return torch.nn.Sequential(layer(n_in, hidden), torch.nn.ReLU(inplace=True), torch.nn.Dropout(dropout),
                                   layer(hidden, num_classes))
    return torch.nn.Sequential(torch.nn.Dropout(dropout), layer(n_in, num_classes)) if dropout else layer(n_in, num_classes)


def load(path):
    """(run a float32 NCHW batch -> logits, metadata)."""
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["transferlab"])
    net = meta["network"]
    model = torchvision.models.get_model(meta["arch"], weights=None, num_classes=len(meta["classes"]),
                                         **net["build_kwargs"])
    if net["hidden"] or net["dropout"]:
        old = model.get_submodule(net["head"])
        model.set_submodule(net["head"], new_head(old, len(meta["classes"]), net["hidden"], net["dropout"]))
    model.load_state_dict(load_file(path))
    model.eval()

    def run(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()
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
