"""The issue's noisy copy of ants/bees, built at test time in a temporary folder (nothing
derived from the photos is committed):

* the labels of 10% of the training photos flipped (seeded): the file moves to the
  other class's folder, as a photo filed under the wrong class would be;
* 5 training photos copied into val after a resize (to 80%) and a JPEG re-encode at
  quality 85: the leak a re-exported copy of the same photo makes;
* 3 Fashion-MNIST photos (28x28 grey clothes) added to train: photos of another domain.

``build_noisy`` returns the folder and what it planted, by path, for the tests to score.
"""
from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

FLIP_SHARE, LEAKS, OUTLIERS = 0.10, 5, 3


@dataclass
class Planted:
    root: Path
    flipped: list[str] = field(default_factory=list)             # paths in the noisy copy (train)
    leaks: list[tuple[str, str]] = field(default_factory=list)   # (train photo, its copy in val)
    outliers: list[str] = field(default_factory=list)            # paths in the noisy copy (train)


def build_noisy(source: Path, fashion: Path, dest: Path, seed: int = 0) -> Planted:
    """Copy ``source`` (train/ and val/ class folders) to ``dest`` and plant the noise."""
    from PIL import Image
    shutil.copytree(source, dest)
    out = Planted(dest)
    rng = random.Random(seed)
    classes = sorted(p.name for p in (dest / "train").iterdir() if p.is_dir())
    train = sorted(str(p) for c in classes for p in (dest / "train" / c).iterdir() if p.is_file())
    n_flip = round(FLIP_SHARE * len(train))
    picked = rng.sample(train, n_flip + LEAKS)
    for path in picked[:n_flip]:
        p = Path(path)
        other = next(c for c in classes if c != p.parent.name)
        target = dest / "train" / other / p.name
        p.rename(target)
        out.flipped.append(str(target))
    for k, path in enumerate(picked[n_flip:]):
        p = Path(path)
        with Image.open(p) as img:
            img = img.convert("RGB")
            small = img.resize((max(1, int(img.width * 0.8)), max(1, int(img.height * 0.8))), Image.Resampling.BILINEAR)
        copy = dest / "val" / p.parent.name / f"copy{k}_{p.stem}.jpg"
        small.save(copy, "JPEG", quality=85)
        out.leaks.append((str(p), str(copy)))
    shirts = sorted((fashion / "train").rglob("*.png"))
    for k, shirt in enumerate(rng.sample(shirts, OUTLIERS)):
        target = dest / "train" / classes[k % len(classes)] / f"fashion{k}.png"
        shutil.copyfile(shirt, target)
        out.outliers.append(str(target))
    return out
