"""Predict and Grad-CAM on one shared Predictor, from several threads at once (the
dashboard shares one per run between tabs).  Where BatchNorm folding never applies
(SqueezeNet has no BatchNorm), the prediction model *is* Grad-CAM's model: predictions
ran through Grad-CAM's hooks, 21-24 errors in this test before (issue #20, finding 6)."""
import threading

import numpy as np

from core.data.images import load_rgb
from core.models.inference import is_view_of
from core.runs.store import load_run
from core.serving.predict import Predictor, explain
from tests.conftest import make_run


def test_predict_and_explain_at_once_on_squeezenet(tiny_folders, isolated_dirs):
    run_dir = make_run(tiny_folders, isolated_dirs / "runs", arch="squeezenet1_1")
    p = Predictor(run_dir, "cpu")
    assert is_view_of(p.fast_model, p.model)  # nothing folded: one model for both
    root = load_run(run_dir)["split"]["root"]
    image = load_rgb(f"{root}/{load_run(run_dir)['split']['val'][0][0]}")
    expected, heat = p.predict(image), np.asarray(explain(p, image, 0))
    errors = []

    def predicting():
        for _ in range(15):
            try:
                got = p.predict(image)
                if [r["label"] for r in got] != [r["label"] for r in expected] or \
                        any(abs(a["prob"] - b["prob"]) > 1e-5 for a, b in zip(got, expected)):
                    errors.append(f"prediction {got} instead of {expected}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(f"predict: {type(e).__name__}: {e}")

    def explaining():
        for _ in range(15):
            try:
                if not np.array_equal(np.asarray(explain(p, image, 0)), heat):
                    errors.append("a different heatmap")
            except Exception as e:  # noqa: BLE001
                errors.append(f"explain: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=f) for f in (predicting, predicting, explaining, explaining)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], f"{len(errors)} errors, first: {errors[:3]}"
