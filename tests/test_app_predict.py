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
