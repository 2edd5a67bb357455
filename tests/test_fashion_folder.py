"""The Fashion-MNIST folder built from Debian's dataset-fashion-mnist: right layout and
counts, real 28x28 images, train and val drawn from different splits, and the dataset
scanner sees it as a train/val folder."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from core.data.datasets import scan_dataset
from tests.fashion_mnist import CLASS_NAMES, build_fashion_folder

CLASSES = CLASS_NAMES[:5]


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def test_layout_counts_and_images(fashion_folder):
    for split, n in (("train", 40), ("val", 20)):
        assert sorted(p.name for p in (fashion_folder / split).iterdir()) == sorted(CLASSES)
        for name in CLASSES:
            files = _pngs(fashion_folder / split / name)
            assert len(files) == n, (split, name)
            for f in files:
                with Image.open(f) as img:
                    img.load()
                    assert img.size == (28, 28)


def test_train_and_val_share_no_image(fashion_folder):
    # Train comes from the package's train split, val from its test split; no source
    # image is in both, so no written file should be byte-identical across the two.
    train = {f.read_bytes() for f in fashion_folder.glob("train/*/*.png")}
    val = {f.read_bytes() for f in fashion_folder.glob("val/*/*.png")}
    assert len(train) > 150 and len(val) > 75  # mostly distinct images, not blanks
    assert not train & val


def test_scan_dataset_sees_split_folder(fashion_folder):
    ds = scan_dataset(str(fashion_folder), 0.2, 0)
    assert ds.classes == sorted(CLASSES)
    assert (len(ds.train), len(ds.val)) == (200, 100)
    assert not ds.skipped


def test_build_is_deterministic(fashion_folder, tmp_path):
    # Same seed -> the same files, so a failure is reproducible from its seed.
    again = build_fashion_folder(tmp_path / "again")
    for f in fashion_folder.glob("*/*/*.png"):
        assert (again / f.relative_to(fashion_folder)).read_bytes() == f.read_bytes()
