"""Take the model away through the pages (AppTest): export a real ants/bees run to ONNX on
Compare (checked on its 153 validation photos before the download appears), download its
bundle, import that bundle on a second installation's Compare and classify a photo with
it on Predict; a dataset .zip handed in as a bundle is refused with nothing added."""
from __future__ import annotations

import io
import zipfile

import pytest

from core import paths
from core.runs.store import list_runs
from tests.conftest import VISITOR, owner_of_key

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def texts(els) -> str:
    return " ".join(e.value for e in els).replace("\\", "")


def open_page(page: str, sid: str = VISITOR):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["sid"] = sid
    at.switch_page(page)
    return at.run()


def uploader(at, label_start: str):
    return next(u for u in at.file_uploader if u.label.startswith(label_start))


def test_export_download_bundle_import_and_predict(ants_bees, mobilenet_file, isolated_dirs, monkeypatch):
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    run_dir, _, _ = run_experiment(ExperimentConfig(data=str(ants_bees), name="insects", train=TrainConfig(epochs=2),
                                                    owner=owner_of_key(VISITOR)), runs_dir=paths.DEFAULT_RUNS_DIR)

    at = open_page("pages/compare.py")
    assert not at.exception
    at.radio(key="export-format-compare").set_value("onnx").run()
    next(b for b in at.button if b.label == "Export to onnx").click().run()
    assert not at.exception, at.exception
    assert "top-1 agreement 100.0% on 153 validation images" in texts(at.success)
    assert any(b.label.startswith("Download insects.onnx") for b in at.get("download_button"))
    assert 'MODEL = "insects.onnx"' in at.code[0].value and "onnxruntime" in at.code[0].value
    # Another tab of the same workspace later: the checked export is offered at once, without exporting again.
    again = open_page("pages/compare.py")
    again.radio(key="export-format-compare").set_value("onnx").run()
    assert not any(b.label == "Export to onnx" for b in again.button)
    assert "top-1 agreement 100.0%" in texts(again.success)

    at.radio(key="export-format-compare").set_value("bundle").run()
    assert any(b.label == "Download the run bundle" for b in at.get("download_button"))
    bundle = (run_dir / "exports" / "insects.transferlab.zip").read_bytes()

    # A second installation: empty runs folder.  The import is on Compare before any run exists.
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", isolated_dirs / "other-runs")
    other = open_page("pages/compare.py", sid="Another-installation-0")
    assert not other.exception and "No finished runs yet" in texts(other.info)
    dataset_zip = io.BytesIO()
    with zipfile.ZipFile(dataset_zip, "w") as zf:
        zf.writestr("ants/a.jpg", (ants_bees / "train/ants").iterdir().__next__().read_bytes())
    uploader(other, "A run bundle").set_value(("photos.zip", dataset_zip.getvalue(), "application/zip")).run()
    assert "photos.zip is not a transferlab run bundle" in texts(other.error)
    assert list_runs(paths.DEFAULT_RUNS_DIR) == []

    uploader(other, "A run bundle").set_value(("insects.transferlab.zip", bundle, "application/zip")).run()
    assert not other.exception, other.exception
    assert "Imported **insects**" in texts(other.success)
    imported = list_runs(paths.DEFAULT_RUNS_DIR)
    assert [r["name"] for r in imported] == ["insects"]
    assert imported[0]["owner"] == owner_of_key("Another-installation-0")  # the importer's run
    assert "/" not in (imported[0]["config"].get("data") or "")  # the bundle carried no server path
    assert "no validation images on this machine" in texts(other.info) and not other.error  # said, not a traceback

    other.switch_page("pages/predict.py").run()
    assert not other.exception and "Classes: ants, bees" in texts(other.caption)
    photo = sorted((ants_bees / "val/bees").iterdir())[0]
    uploader(other, "Photos").set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    assert not other.exception
    assert "confident" in " ".join(m.value for m in other.markdown)
