"""The browser never sees a traceback: an unexpected error in a page shows a short
message with an error id, the trace goes to the server log; captions of any script."""
import logging

from tests.conftest import write_image
from ui import common
from ui import state as S


def test_unexpected_error_shows_an_id_not_a_traceback(app, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("secret detail at /srv/transferlab/core/data.py")
    monkeypatch.setattr(common, "cached_scan", broken)
    with caplog.at_level(logging.ERROR, logger="transferlab"):
        at = app()
    assert not at.exception  # nothing reached Streamlit's own exception display
    shown = " ".join(e.value for e in at.error)
    assert "error id" in shown and "secret detail" not in shown and "Traceback" not in shown
    error_id = shown.split("error id **")[1].split("**")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)  # the trace is in the log
    monkeypatch.undo()
    at.run()  # the setup survives the error: the same tab works on the next run
    assert not at.exception and "2 classes" in at.success[0].value


def test_error_details_are_off_in_the_config():
    import tomllib
    from tests.conftest import ROOT
    with open(ROOT / ".streamlit" / "config.toml", "rb") as f:
        assert tomllib.load(f)["client"]["showErrorDetails"] == "none"


def test_class_names_in_any_script_are_captions_not_pixels(app, tmp_path):
    names = ["T恤 t-shirt", "пчела", "نحلة", "🐝 bee"]
    for k, name in enumerate(names):
        for i in range(3):
            write_image(tmp_path / "set" / name / f"{i}.jpg", (40 * k, 200 - 40 * k, 90))
    at = app(None, {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(tmp_path / "set")})
    assert not at.exception
    captions = [c for img in at.image for c in (img.proto.imgs and [i.caption for i in img.proto.imgs] or [])]
    assert captions and set(captions) <= set(names)
