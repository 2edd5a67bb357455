"""Data page (AppTest): the demo preselected, a folder, a zip, and bad input."""
import io
import zipfile

from PIL import Image

from ui import state as S


def texts(els):
    return " ".join(e.value for e in els)


def test_demo_is_preselected_with_counts_and_samples(app, ants_bees):
    at = app()
    assert not at.exception
    assert "2 classes" in texts(at.success) and "245 training and 153 validation" in texts(at.success)
    assert at.slider(key="_w.val_split").disabled  # the demo brings its own val/ folder
    assert at.get("plotly_chart")
    assert any(e.label.startswith("Skipped files: 0") for e in at.expander)
    before = at.session_state["grid_seed"]
    at.button[0].click().run()  # "Draw new samples"
    assert at.session_state["grid_seed"] == before + 1 and not at.exception
    assert len(at.image) >= 1


def test_folder_source_and_a_bad_folder(app, tiny_folders, tmp_path):
    at = app()
    at.radio(key="_w.data_source").set_value("folder").run()
    at.selectbox(key="_w.folder_path").set_value(str(tiny_folders.resolve())).run()  # offered: conftest's isolated_dirs
    assert not at.exception
    assert "2 classes" in texts(at.success) and "16 training and 4 validation" in texts(at.success)
    assert not at.slider(key="_w.val_split").disabled  # one folder of class folders: the slider splits it
    (tmp_path / "one" / "only").mkdir(parents=True)  # not a dataset (one class, no images): not listed
    at.run()
    assert [o.rsplit("/", 1)[-1] for o in at.selectbox(key="_w.folder_path").options] == ["tiny"]
    # A folder that was a dataset when chosen and is not one now: the scan says why, by its name.
    for f in (tiny_folders / "blue").iterdir():
        f.write_bytes(b"junk")
    at.session_state[S.DATA_SEED] = 1  # a new scan (the cached one is keyed by the setup)
    at.run()
    assert not at.exception and "tiny/blue has no usable image" in texts(at.error)
    assert str(tmp_path) not in texts(at.error)


def _zip_bytes(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def _jpeg(color):
    b = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(b, "JPEG")
    return b.getvalue()


def test_zip_upload_and_unsafe_zip(app):
    at = app()
    at.radio(key="_w.data_source").set_value("zip").run()
    good = _zip_bytes({f"set/{c}/{i}.jpg": _jpeg(col) for c, col in (("cat", (250, 0, 0)), ("dog", (0, 0, 250))) for i in range(5)}
                      | {"set/dog/broken.jpg": b"nope"})
    at.file_uploader[0].set_value(("set.zip", good, "application/zip")).run()
    assert not at.exception
    assert "2 classes" in texts(at.success)
    assert any(e.label.startswith("Skipped files: 1") for e in at.expander)
    evil = _zip_bytes({"../../evil.jpg": b"x", "a/b.jpg": _jpeg((1, 2, 3))})
    at.file_uploader[0].set_value(("evil.zip", evil, "application/zip")).run()
    assert not at.exception and "outside the target folder" in texts(at.error)
    assert "evil.zip" in texts(at.error)  # the user's file name, not the server's copy
    assert not at.success and "still **set.zip**" in texts(at.info)  # no stale summary; nothing lost
    assert at.session_state[S.ZIP_NAME] == "set.zip"
    at.switch_page("pages/model.py").run()
    at.switch_page("pages/data.py").run()  # the uploader is empty again: the accepted zip is still in use
    assert "Using **set.zip**" in " ".join(c.value for c in at.caption) and "2 classes" in texts(at.success)


def test_a_zip_that_is_no_dataset_is_refused_and_the_dataset_in_use_stays(app, isolated_dirs):
    # An empty archive used to be accepted, became the dataset in use and broke every page
    # with a message naming the server's internal folder id.
    at = app()
    at.radio(key="_w.data_source").set_value("zip").run()
    good = _zip_bytes({f"set/{c}/{i}.jpg": _jpeg(col) for c, col in (("cat", (250, 0, 0)), ("dog", (0, 0, 250))) for i in range(5)})
    at.file_uploader[0].set_value(("set.zip", good, "application/zip")).run()
    for name, blob in (("empty.zip", _zip_bytes({})), ("notes.zip", _zip_bytes({"a/x.txt": b"x", "b/y.txt": b"y"}))):
        at.file_uploader[0].set_value((name, blob, "application/zip")).run()
        assert not at.exception
        assert f"{name} is not a dataset" in texts(at.error) and "zip-" not in texts(at.error)
        assert "still **set.zip**" in texts(at.info) and at.session_state[S.ZIP_NAME] == "set.zip"
    uploads = [p.name for p in (isolated_dirs / "data").rglob("zip-*")]
    assert len(uploads) == 1  # the refused archives left nothing on disk
