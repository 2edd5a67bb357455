"""Model page (AppTest): picker, freeze strategies, stage table, load report, missing weights."""
from ui import state as S


def test_default_model_feature_extractor(app, mobilenet_file):
    at = app("pages/model.py")
    assert not at.exception
    assert at.selectbox(key="_w.arch").value == "mobilenet_v2"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Trainable"] == f"{1280 * 2 + 2:,}"
    assert "312 tensors loaded, 2 skipped" in " ".join(c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table["stage"])[-1] == "head (classifier.1)" and bool(table["trainable"].iloc[-1])
    assert not table["trainable"].iloc[:-1].any()


def test_freeze_first_n_and_fine_tune(app, mobilenet_file):
    at = app("pages/model.py")
    at.radio[1].set_value("first").run()
    at.slider[1].set_value(7).run()
    assert not at.exception and at.session_state[S.FREEZE] == 7
    table = at.dataframe[0].value
    assert not table["trainable"].iloc[:7].any() and table["trainable"].iloc[7:].all()
    at.radio[1].set_value("none").run()
    assert at.dataframe[0].value["trainable"].all()


def test_missing_weights_are_explained_not_raised(app):
    at = app("pages/model.py", {S.ARCH: "resnet18"})
    assert not at.exception
    assert "resnet18-f37072fd.pth" in " ".join(w.value for w in at.warning)
    assert at.error and "resnet18-f37072fd.pth" in at.error[0].value
    assert at.dataframe[0].value["stage"].tolist()[:2] == ["stem", "layer1"]  # structure still shown


def test_uploaded_weights_file_shows_load_report(app, mobilenet_file):
    at = app("pages/model.py")
    at.radio(key="_w.weights").set_value("file").run()
    at.file_uploader[0].set_value(("mnv2.pth", mobilenet_file.read_bytes(), "application/octet-stream")).run()
    assert not at.exception
    assert "file:mnv2" in " ".join(c.value for c in at.caption)
