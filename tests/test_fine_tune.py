"""The fine-tune recipe on real photos: it must beat training the head alone.

Two datasets: the tutorial's ants/bees (245 train / 153 val) and five classes of
Fashion-MNIST photos (200 / 100) from Debian's package, a domain far from ImageNet's.
Both at the CLI's defaults otherwise (batch 32), pretrained MobileNetV2.  Marked slow
(about 3 minutes on 2 cores): CI runs them.
"""
from __future__ import annotations

import pytest

from core.training.experiment import ExperimentConfig, run_experiment
from core.training.schedules import FINE_TUNE_RECIPE
from core.training.trainer import TrainConfig

pytestmark = pytest.mark.slow


def _run(data, freeze, epochs, runs_dir, **train):
    cfg = ExperimentConfig(data=str(data), arch="mobilenet_v2", weights="imagenet", freeze=freeze,
                           train=TrainConfig(epochs=epochs, seed=0, **train))
    run_dir, result, _ = run_experiment(cfg, runs_dir=runs_dir)
    assert run_dir is not None
    return result


def test_fine_tune_on_ants_and_bees_beats_the_frozen_run(ants_bees, mobilenet_file, isolated_dirs, tmp_path):
    tuned = _run(ants_bees, "none", 3, tmp_path / "runs", **FINE_TUNE_RECIPE)
    frozen = _run(ants_bees, "backbone", 3, tmp_path / "runs",
                  **{k: v for k, v in FINE_TUNE_RECIPE.items() if k in ("optimizer", "lr")})
    assert [h["phase"] for h in tuned.history] == ["frozen", "unfrozen", "unfrozen"]
    assert tuned.best_val_acc >= 0.95, tuned.history
    assert tuned.best_val_acc >= frozen.best_val_acc, (tuned.best_val_acc, frozen.best_val_acc)


def test_fine_tune_on_fashion_photos_is_at_least_as_good_as_frozen(fashion_folder, mobilenet_file, isolated_dirs,
                                                                   tmp_path):
    # The dashboard's transfer-vs-scratch pair: the frozen run at the tab's defaults, the
    # fine-tuned run with the recipe.
    tuned = _run(fashion_folder, "none", 5, tmp_path / "runs", **FINE_TUNE_RECIPE)
    frozen = _run(fashion_folder, "backbone", 5, tmp_path / "runs")
    assert tuned.best_val_acc >= frozen.best_val_acc, (tuned.best_val_acc, frozen.best_val_acc)
    # Unfreezing must add something here: ImageNet features alone do not fit clothing best.
    unfrozen_best = max(h["val_acc"] for h in tuned.history if h["phase"] == "unfrozen")
    first = tuned.history[0]["val_acc"]
    assert unfrozen_best > first, tuned.history
