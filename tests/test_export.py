"""Taking a trained run away: ONNX, TorchScript and .safetensors exports of a real
ants/bees run, each checked against the PyTorch model on the 153 validation photos; the
standalone snippets run in a clean interpreter; a disagreeing export is refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.serving.export import FORMATS, ExportError, cached_export, export_run, load_snippet, metadata, snippet_text

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def ants_bees_run(tmp_path_factory):
    from tests.conftest import ANTS_BEES, MOBILENET_FILE
    if ANTS_BEES is None or MOBILENET_FILE is None or not MOBILENET_FILE.is_file():
        pytest.skip("the ants/bees photos or the MobileNetV2 weights are absent from ../shared")
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    cfg = ExperimentConfig(data=str(ANTS_BEES), name="ants-bees", train=TrainConfig(epochs=3))
    run_dir, result, _ = run_experiment(cfg, runs_dir=tmp_path_factory.mktemp("runs"))
    assert result.best_val_acc >= 0.9
    return Path(run_dir)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_agrees_with_the_model_on_every_validation_photo(ants_bees_run, fmt):
    report = export_run(ants_bees_run, fmt)
    assert report["ok"] and report["images"] == 153 and report["input_source"] == "validation images"
    assert report["top1_agreement"] == 1.0 and report["max_abs_logit_diff"] <= 1e-3
    path = Path(report["path"])
    assert path.is_file() and path.suffix == FORMATS[fmt]
    stored = json.loads(path.with_name(path.name + ".parity.json").read_text())
    assert stored["ok"] and stored["images"] == 153  # the check is kept next to the file
    # What travels inside the file, read back with the standalone loader alone.
    _, meta = load_snippet(fmt).load(str(path))
    assert meta["classes"] == ["ants", "bees"] and meta["arch"] == "mobilenet_v2"
    assert meta["input"]["crop_size"] == 224 and meta["input"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["weights_origin"] == "imagenet:IMAGENET1K_V1" and meta["best_val_acc"] >= 0.9


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_snippet_classifies_a_photo_without_transferlab(ants_bees_run, fmt, tmp_path):
    """The page's snippet, saved as a file and run in an isolated interpreter from an
    empty folder (no transferlab on its path), gives the dashboard's top class."""
    from core.serving.predict import Predictor
    model = Path((cached_export(ants_bees_run, fmt) or export_run(ants_bees_run, fmt))["path"])
    script = tmp_path / "classify.py"
    script.write_text(snippet_text(fmt, str(model)), encoding="utf-8")
    photo = sorted((Path(Predictor(ants_bees_run).run["split"]["root"]) / "val" / "bees").iterdir())[0]
    out = subprocess.run([sys.executable, "-I", str(script), str(photo)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    label, prob = out.stdout.splitlines()[0].split("\t")
    top = Predictor(ants_bees_run).predict(str(photo), 1)[0]
    assert label == top["label"] and abs(float(prob) - top["prob"]) < 2e-3


def test_snippet_preprocessing_matches_the_evaluation_transform(ants_bees):
    """The snippets resize and crop with Pillow alone; torchvision's evaluation transform
    is the reference."""
    from core.data.images import load_rgb
    from core.data.transforms import TransformSpec, eval_transform
    meta = {"input": {**TransformSpec().to_dict(), "mean": list(TransformSpec().mean), "std": list(TransformSpec().std)}}
    snippet = load_snippet("onnx")
    for photo in sorted((ants_bees / "val" / "ants").iterdir())[:5]:
        ours = snippet.preprocess(photo, meta)
        ref = eval_transform(TransformSpec())(load_rgb(photo)).numpy()
        assert ours.shape == ref.shape == (3, 224, 224)
        assert np.abs(ours - ref).max() < 0.05 and np.abs(ours - ref).mean() < 2e-3  # rounding of uint8 resampling


def test_an_export_that_disagrees_is_refused_and_not_offered(ants_bees_run, monkeypatch):
    from core.serving import export as ex
    real = ex.load_snippet

    class Skewed:  # an exporter bug: the right network, one logit off by 0.01
        def __init__(self, fmt):
            self.module = real(fmt)

        def load(self, path):
            run, meta = self.module.load(path)
            return (lambda b: run(b) + np.array([0.01, 0.0], dtype=np.float32)), meta
    monkeypatch.setattr(ex, "load_snippet", Skewed)
    target = ants_bees_run / "exports" / "skewed.safetensors"
    with pytest.raises(ExportError, match="disagrees with the model.*top-1 agreement .* max"):
        export_run(ants_bees_run, "safetensors", out=target, max_images=40)
    assert not target.exists() and not list(target.parent.glob(".*.part"))
    assert json.loads(target.with_name(target.name + ".parity.json").read_text())["ok"] is False


def test_export_cli_prints_the_report_and_names_bad_input(ants_bees_run, tmp_path):
    out = subprocess.run([sys.executable, "-m", "core", "export", str(ants_bees_run), "--format", "safetensors",
                          "--out", str(tmp_path), "--max-images", "20"], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["images"] == 20 and Path(report["path"]).parent == tmp_path
    bad = subprocess.run([sys.executable, "-m", "core", "export", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == f"error: run not found: {tmp_path / 'nope'}"


def test_metadata_describes_a_hidden_layer_head(ants_bees_run):
    from core.runs.store import load_run
    run = load_run(ants_bees_run)
    run["config"] = {**run["config"], "model": {**run["config"]["model"], "hidden": 64, "dropout": 0.2}}
    meta = metadata(run)
    assert meta["network"]["hidden"] == 64 and meta["network"]["dropout"] == 0.2
    assert meta["output"].startswith("logits")


def test_readme_snippet_classifies_a_photo(ants_bees_run, tmp_path):
    """The README's ONNX example, copied as a user would, run from an empty folder."""
    from core.serving.predict import Predictor
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    code = readme.split("## Take the model away", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    model = Path((cached_export(ants_bees_run, "onnx") or export_run(ants_bees_run, "onnx"))["path"])
    (tmp_path / "classify.py").write_text(code.replace('"model.onnx"', json.dumps(str(model))), encoding="utf-8")
    photo = sorted((Path(Predictor(ants_bees_run).run["split"]["root"]) / "val" / "ants").iterdir())[3]
    out = subprocess.run([sys.executable, "-I", "classify.py", str(photo)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == Predictor(ants_bees_run).predict(str(photo), 1)[0]["label"]
