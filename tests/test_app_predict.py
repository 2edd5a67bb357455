"""Predict page (AppTest): upload photos, one of them broken; top-k and Grad-CAM."""
from tests.conftest import make_run


def test_no_runs_says_what_to_do(app):
    at = app("pages/predict.py")
    assert not at.exception and "No trained run yet" in at.info[0].value


def test_uploads_classified_and_bad_file_reported(app, ants_bees, isolated_dirs, mobilenet_file):
    make_run(ants_bees, isolated_dirs / "runs", "antsbees", arch="mobilenet_v2", weights="imagenet", freeze="backbone", epochs=2)
    at = app("pages/predict.py")
    assert not at.exception and "No trained run yet" not in " ".join(i.value for i in at.info)
    bee = sorted((ants_bees / "val" / "bees").iterdir())[0].read_bytes()
    ant = sorted((ants_bees / "val" / "ants").iterdir())[0].read_bytes()
    at.file_uploader[0].set_value([("bee.jpg", bee, "image/jpeg"), ("broken.jpg", b"\xff\xd8junk", "image/jpeg"), ("empty.jpg", b"", "image/jpeg"),
                                   ("ant.jpg", ant, "image/jpeg")]).run()
    assert not at.exception
    assert len(at.error) == 2 and "broken.jpg" in at.error[0].value
    assert "empty.jpg" in at.error[1].value and "empty file" in at.error[1].value  # as on the Data page
    headlines = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert [h.split()[1] for h in headlines] == ["bees", "ants"]
    assert len(at.image) >= 4  # two photos and two Grad-CAM overlays


def test_a_zip_of_photos_is_classified_in_one_go_with_a_csv(app, ants_bees, isolated_dirs, mobilenet_file):
    """A .zip (with a broken photo, a hidden file and a note inside) goes into one table
    and a CSV; the run's checked ONNX export serves the predictions once it exists, with
    the same answers as the PyTorch model."""
    import csv
    import io
    import zipfile
    from core.serving.batch_predict import to_csv
    from core.serving.export import export_run
    run = make_run(ants_bees, isolated_dirs / "runs", "antsbees", arch="mobilenet_v2", weights="imagenet",
                   freeze="backbone", epochs=2)
    photos = sorted((ants_bees / "val" / "bees").iterdir())[:10] + sorted((ants_bees / "val" / "ants").iterdir())[:10]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in photos:
            zf.write(p, f"mine/{p.parent.name}-{p.name}")
        zf.writestr("mine/broken.jpg", b"\xff\xd8junk")
        zf.writestr("mine/.DS_Store", b"x")
        zf.writestr("mine/notes.txt", b"not a photo")
    at = app("pages/predict.py")
    assert "PyTorch" in " ".join(c.value for c in at.caption)
    at.file_uploader[0].set_value([("photos.zip", buf.getvalue(), "application/zip")]).run()
    assert not at.exception
    assert "20 photos classified" in at.success[0].value and "1 could not be read" in at.success[0].value
    table = at.dataframe[0].value
    assert len(table) == 21
    right = sum(("bees" in f) == (p == "bees") for f, p in zip(table["file"], table["prediction"]) if isinstance(p, str))
    assert right >= 18  # a frozen ImageNet body on real photos
    assert at.get("download_button")[0].proto.label == "Download the predictions (CSV)"
    rows = list(csv.DictReader(io.StringIO(to_csv(at.session_state["_batch"][1]))))  # what the button downloads
    assert len(rows) == 21 and rows[-1]["file"] == "photos.zip/mine/broken.jpg" and rows[-1]["error"]
    torch_answers = list(table["prediction"])

    export_run(run, "onnx")  # a checked export: Predict moves onto onnxruntime, same answers
    again = app("pages/predict.py")
    assert "onnxruntime" in " ".join(c.value for c in again.caption)
    again.file_uploader[0].set_value([("photos.zip", buf.getvalue(), "application/zip")]).run()
    assert not again.exception and list(again.dataframe[0].value["prediction"]) == torch_answers


def test_a_zip_bomb_or_a_non_zip_is_refused_by_name():
    import io
    import zipfile
    import pytest
    from core.errors import ArchiveError
    from core.serving.batch_predict import photos_in_zip
    with pytest.raises(ArchiveError, match="fake.zip is not a readable zip"):
        photos_in_zip(b"PK\x03\x04 not really", "fake.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.jpg", b"\0" * (3 * 2**20))
    with pytest.raises(ArchiveError, match="more than 1 MB"):
        photos_in_zip(buf.getvalue(), "bomb.zip", max_bytes=2**20)
