"""A folder of real photos that are not ants/bees, built at test time from Debian's
``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``).

The package ships Zalando's Fashion-MNIST as the original four gzipped IDX files under
/usr/share/datasets/fashion-mnist: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
Nothing derived from them is committed; ``build_fashion_folder`` writes a small
``train/<class>/*.png`` + ``val/<class>/*.png`` tree wherever a test asks for it.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")

# Official label order 0..9 (the package's README.md "Labels" table). Names are made
# folder-safe: "T-shirt/top" would otherwise be a nested folder, "Ankle boot" has a space.
CLASS_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]

# Our split name -> the package's file prefix. Train images come from its train split and
# val images from its test split, so the two never share a source image.
_SPLITS = {"train": "train", "val": "t10k"}


def fashion_mnist_files() -> dict | None:
    """``{"train": (images, labels), "val": (images, labels)}`` paths, or None when the
    package (or any one of its four files) is absent."""
    files = {}
    for split, prefix in _SPLITS.items():
        pair = (PACKAGE_DIR / f"{prefix}-images-idx3-ubyte.gz",
                PACKAGE_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        if not all(p.is_file() for p in pair):
            return None
        files[split] = pair
    return files


def _read_idx(path: Path) -> np.ndarray:
    """Parse one gzipped IDX file: a big-endian header (two zero bytes, a type code, the
    number of dimensions, then one uint32 per dimension) followed by the raw array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    # 0x08 is unsigned byte, the only type Fashion-MNIST uses; refuse anything else
    # rather than silently misreading a different file.
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def build_fashion_folder(dest: Path, classes: int = 5, train_per_class: int = 40,
                         val_per_class: int = 20, seed: int = 0) -> Path:
    """Write ``dest/{train,val}/<class>/<i>.png`` (28x28 grayscale) for the first
    ``classes`` Fashion-MNIST classes and return ``dest``.

    Sampling is seeded, so the same arguments always give the same images.
    Raises FileNotFoundError when the Debian package is not installed.
    """
    from PIL import Image

    files = fashion_mnist_files()
    if files is None:
        raise FileNotFoundError(f"{PACKAGE_DIR} is absent: apt-get install dataset-fashion-mnist")
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be between 2 and {len(CLASS_NAMES)}, got {classes}")
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        images_path, labels_path = files[split]
        labels = _read_idx(labels_path)
        # Decompressing the 60k-image train file is the slow part (~0.3 s); it is read
        # once per split, never per class.
        images = _read_idx(images_path)
        if len(images) != len(labels):
            raise ValueError(f"{images_path}: {len(images)} images but {len(labels)} labels")
        for class_id in range(classes):
            candidates = np.flatnonzero(labels == class_id)
            # Sorted so file i is the i-th earliest pick, independent of draw order.
            picks = np.sort(rng.choice(candidates, size=per_class, replace=False))
            folder = dest / split / CLASS_NAMES[class_id]
            folder.mkdir(parents=True, exist_ok=True)
            for i, idx in enumerate(picks):
                # A 2-D uint8 array becomes a mode "L" (grayscale) image; the loader
                # converts to RGB, as it would for any grayscale photo.
                Image.fromarray(images[idx]).save(folder / f"{i}.png")
    return dest
