"""Inside page (AppTest): its four sections with no run, a frozen run, a fine-tuned run and
an imported bundle; nothing heavy runs unasked, and a frozen run's features are reused."""
from core.runs.bundle import import_bundle, write_bundle
from tests.conftest import VISITOR, make_run, owner_of_key
from ui import state as S

PAGE = "pages/inside.py"


def setup(data, run_dir=None) -> dict:
    return {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(data), S.ARCH: "mobilenet_v2", S.WEIGHTS: "imagenet",
            S.INSIDE_RUN: str(run_dir) if run_dir else None}


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def button(at, key):
    return next(b for b in at.button if b.key == key)


def test_without_a_run_nothing_heavy_runs_and_the_cheap_pictures_draw(app, tiny_split, mobilenet_file):
    at = app(PAGE, setup(tiny_split))
    assert not at.exception and not at.error
    assert [h.value.split(" · ")[0] for h in at.header] == ["1", "2", "3", "4"]
    assert "not computed yet for: **ImageNet, random init**" in texts(at.info)
    assert button(at, "inside_extract") and not at.metric  # the cost is shown, the work waits for the click
    assert "Choose a trained run at the top of the page" in texts(at.info)
    # Filters of ImageNet and random init, and 9 stages x 2 bodies of feature maps.
    assert len(at.image) >= 2 + 18
    captions = texts(at.caption)
    assert "smoothness" in captions and "None of your runs of this architecture" in captions
    assert "Choose a trained run at the top of the page to end with its Grad-CAM" in captions


def test_a_frozen_run_shares_its_features_and_changed_nothing(app, tiny_split, isolated_dirs, mobilenet_file):
    run_dir = make_run(tiny_split, isolated_dirs / "runs", "frozen", arch="mobilenet_v2", weights="imagenet",
                       freeze="backbone", epochs=1)
    at = app(PAGE, setup(tiny_split, run_dir))
    assert not at.exception and not at.error
    # Its training ran the ImageNet body over these photos, and its body is that body:
    # only random init is left to compute.
    assert "not computed yet for: **random init**" in texts(at.info)
    button(at, "inside_extract").click().run()
    assert not at.exception and not at.error
    values = {}
    for m in at.metric:
        values.setdefault(m.label, []).append(m.value)
    assert len(values["k-NN accuracy (k=5)"]) == 3 and len(values["Linear probe"]) == 3
    imagenet, _, frozen = values["k-NN accuracy (k=5)"]
    assert imagenet == frozen  # the same features, point for point
    assert "kept its body frozen" in texts(at.caption)
    table = at.dataframe[-1].value
    assert list(table["relative change"]) == [0.0] * 9
    assert any("Grad-CAM of frozen" in c for i in at.image for c in i.captions)


def test_a_fine_tuned_run_shows_what_moved_and_measures_its_similarity(app, tiny_split, isolated_dirs, mobilenet_file):
    run_dir = make_run(tiny_split, isolated_dirs / "runs", "tuned", arch="mobilenet_v2", weights="imagenet",
                       freeze="none", epochs=1)
    at = app(PAGE, setup(tiny_split, run_dir))
    assert not at.exception and not at.error
    assert "moved" in texts(at.caption) and "**tuned**" in texts(at.caption)  # its first layer beside ImageNet's
    table = at.dataframe[-1].value
    assert all(v > 0 for v in table["relative change"]) and table["CKA before/after"].isna().all()
    assert "kept its body frozen" not in texts(at.caption)
    button(at, "inside_cka").click().run()
    assert not at.exception and not at.error
    cka = at.dataframe[-1].value["CKA before/after"]
    assert len(cka) == 9 and all(0 < v <= 1.0001 for v in cka)


def test_an_imported_bundle_says_its_photos_are_elsewhere(app, tiny_split, isolated_dirs, mobilenet_file, tmp_path):
    trained = make_run(tiny_split, tmp_path / "elsewhere", "insects", arch="mobilenet_v2", weights="imagenet",
                       freeze="backbone", epochs=1)
    bundle = write_bundle(trained, tmp_path / "insects.transferlab.zip")
    run_dir = import_bundle(bundle, isolated_dirs / "runs", owner=owner_of_key(VISITOR))
    at = app(PAGE, setup(tiny_split, run_dir))
    assert not at.exception and not at.error
    assert "was imported: its own photos stayed on the machine it was trained on" in texts(at.info)
    assert "This run was imported" in texts(at.caption)  # section 4 measures on this dataset's photos
    assert list(at.dataframe[-1].value["relative change"]) == [0.0] * 9


def test_another_visitors_run_is_never_offered(app, tiny_split, isolated_dirs, mobilenet_file):
    theirs = make_run(tiny_split, isolated_dirs / "runs", "theirs", arch="mobilenet_v3_small", weights="none",
                      freeze="backbone", epochs=1, owner=owner_of_key("Test-visitor-B-0000000"))
    at = app(PAGE, setup(tiny_split, theirs))
    assert not at.exception
    picker = at.selectbox[0]
    assert picker.options == ["none: ImageNet and random init only"]
    assert at.session_state[S.INSIDE_RUN] is None
    assert "theirs" not in texts(at.caption) + texts(at.info)


def test_an_uploaded_photo_goes_through_and_a_broken_one_is_named(app, tiny_split, ants_bees, mobilenet_file):
    at = app(PAGE, setup(tiny_split))
    at.radio(key="inside_photo_source").set_value("Upload").run()
    assert "Choose a photo to follow it through the network" in texts(at.info)
    at.file_uploader(key="inside_upload").set_value(("broken.jpg", b"\xff\xd8junk", "image/jpeg")).run()
    assert not at.exception and "broken.jpg" in texts(at.error)
    bee = min((ants_bees / "val" / "bees").iterdir()).read_bytes()
    at.file_uploader(key="inside_upload").set_value(("bee.jpg", bee, "image/jpeg")).run()
    assert not at.exception and not at.error
    assert "**bee.jpg** through each body" in texts(at.caption)


def test_an_architecture_without_imagenet_weights_here(app, tiny_split, monkeypatch):
    """Offline, only MobileNetV2's file is here: the page shows random init alone and says why."""
    from core.models import zoo
    monkeypatch.setattr(zoo, "pretrained_available", lambda arch: False)  # whatever this machine's hub cache holds
    at = app(PAGE, {**setup(tiny_split), S.ARCH: "mobilenet_v3_small", S.WEIGHTS: "none"})
    assert not at.exception and not at.error
    assert "No ImageNet weights for mobilenet_v3_small on this machine" in texts(at.caption)
    assert "not computed yet for: **random init**" in texts(at.info)
