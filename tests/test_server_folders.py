"""Server folders as datasets (issue #17): only folders the operator offers, one message
for every refusal, nothing read through links out of a dataset, no server path shown.

``isolated_dirs`` (conftest) makes ``tmp_path`` the one offered root, with the data and
runs folders inside it: the refusals below are the rules, not "outside the root"."""
from pathlib import Path

import pytest
from PIL import Image

from core import paths
from core.data import datasets, server_folders
from core.data.images import load_rgb
from core.errors import DatasetError, ImageReadError
from tests.conftest import ANTS_BEES, write_image
from ui import state as S


def refusal(path) -> str:
    with pytest.raises(DatasetError) as e:
        server_folders.check_folder(path)
    return str(e.value)


def dataset(root: Path, classes=("red", "blue"), n=3) -> Path:
    for k, c in enumerate(classes):
        for i in range(n):
            write_image(root / c / f"{i}.jpg", (200 * (k == 0), 30, 200 * (k == 1)))
    return root


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A dataset outside the offered root: what links and ".." try to reach."""
    return dataset(tmp_path_factory.mktemp("elsewhere") / "secret", ("private", "photos"))


def test_every_refusal_is_the_same_message_and_names_nothing(isolated_dirs, tiny_folders, outside):
    own = dataset(paths.DEFAULT_DATA_DIR / "own" / "abc123")  # every visitor's photos live here
    dataset(paths.DEFAULT_RUNS_DIR / "r1")
    (isolated_dirs / "escape").symlink_to(outside, target_is_directory=True)
    refused = {
        "the data folder": paths.DEFAULT_DATA_DIR, "a dataset in it": own,
        "the runs folder": paths.DEFAULT_RUNS_DIR, "the root of the disk": "/",
        "a missing folder": isolated_dirs / "nowhere", "a file": tiny_folders / "red" / "r0.jpg",
        "a link out of the root": isolated_dirs / "escape", "through the link": isolated_dirs / "escape" / "private",
        "a .. escape": f"{isolated_dirs}/../..", "a .. into the data folder": f"{tiny_folders}/../data/own",
        "the folder holding the data folder": isolated_dirs, "a folder outside the root": outside,
        "a relative path": "tiny", "a ~ path": "~", "a NUL byte": f"{tiny_folders}\0", "not a string": ["/"],
        "nothing": None, "the app's code": paths.REPO_ROOT, "above the checkout": paths.REPO_ROOT.parent,
    }
    messages = {what: refusal(p) for what, p in refused.items()}
    assert set(messages.values()) == {server_folders.REFUSAL}, messages
    assert str(isolated_dirs) not in server_folders.REFUSAL and "/" not in server_folders.REFUSAL
    assert server_folders.check_folder(tiny_folders) == tiny_folders.resolve()


def test_the_checkout_is_refused_even_when_its_parent_is_offered(monkeypatch):
    # The student's case: the folder above the checkout offered as a whole.
    monkeypatch.setenv(server_folders.ROOTS_ENV, str(paths.REPO_ROOT.parent))
    for p in (paths.REPO_ROOT.parent, paths.REPO_ROOT, paths.REPO_ROOT / "tests", paths.REPO_ROOT / "core"):
        assert refusal(p) == server_folders.REFUSAL
    assert not any(o.path.is_relative_to(paths.REPO_ROOT) or paths.REPO_ROOT.is_relative_to(o.path)
                   for o in server_folders.offered_folders())


def test_a_dataset_under_a_root_is_offered_by_a_relative_label_and_accepted(isolated_dirs, tiny_folders, tiny_split):
    dataset(isolated_dirs / "group" / "flowers", ("rose", "tulip"))  # two levels down
    dataset(isolated_dirs / "a" / "b" / "too_deep")                  # three: not looked for
    dataset(isolated_dirs / "single", ("only",))                     # one class: not a dataset
    (isolated_dirs / "texts" / "x").mkdir(parents=True)
    (isolated_dirs / "texts" / "x" / "a.txt").write_text("no images")
    (isolated_dirs / "texts" / "y").mkdir()
    dataset(paths.DEFAULT_DATA_DIR / "own" / "abc123")                # looks like one, never offered
    offers = {o.label: o.path for o in server_folders.offered_folders()}
    root = isolated_dirs.name
    assert offers == {f"{root}/tiny": tiny_folders.resolve(), f"{root}/tinysplit": tiny_split.resolve(),
                      f"{root}/group/flowers": (isolated_dirs / "group" / "flowers").resolve()}
    assert not any(str(isolated_dirs) in label for label in offers)
    for path in offers.values():
        assert server_folders.check_folder(str(path)) == path


def test_nothing_offered_when_the_operator_sets_no_roots(monkeypatch, tiny_folders):
    monkeypatch.setenv(server_folders.ROOTS_ENV, "")
    assert server_folders.allowed_roots() == [] and server_folders.offered_folders() == []
    assert refusal(tiny_folders) == server_folders.REFUSAL


@pytest.mark.skipif(ANTS_BEES is None, reason="../shared/datasets/hymenoptera_data is absent")
def test_the_default_roots_are_the_demo_and_datasets_beside_the_app(monkeypatch):
    monkeypatch.delenv(server_folders.ROOTS_ENV, raising=False)
    roots = server_folders.allowed_roots()
    assert ANTS_BEES.resolve() in roots
    assert all(r in (ANTS_BEES.resolve(), (paths.REPO_ROOT / "datasets").resolve()) for r in roots)
    assert {o.label for o in server_folders.offered_folders()} >= {ANTS_BEES.name}
    assert server_folders.check_folder(ANTS_BEES) == ANTS_BEES.resolve()


def test_a_confined_scan_reads_nothing_through_links_out_of_the_dataset(tiny_folders, outside):
    secret = outside / "private" / "0.jpg"
    (tiny_folders / "red" / "link.jpg").symlink_to(secret)
    (tiny_folders / "stolen").symlink_to(outside / "photos", target_is_directory=True)
    (tiny_folders / "blue" / "inside.jpg").symlink_to(tiny_folders / "blue" / "b0.jpg")  # a link within: fine
    ds = datasets.scan_dataset(tiny_folders, confine=True)
    used = {Path(p).name for p, _ in ds.train + ds.val}
    assert ds.classes == ["blue", "red"] and "link.jpg" not in used and "inside.jpg" in used
    assert not any(str(outside) in p for p, _ in ds.train + ds.val)
    assert ds.skipped == [("red/link.jpg", "a link to a file outside the dataset folder: not read")]
    # The CLI (the operator) reads a folder of links as before.
    loose = datasets.scan_dataset(tiny_folders)
    assert "stolen" in loose.classes and "link.jpg" in {Path(p).name for p, _ in loose.train + loose.val}


def test_skipped_paths_are_relative_to_the_dataset(tiny_split, monkeypatch):
    (tiny_split / "train" / "red" / "notes.txt").write_text("readme")
    write_image(tiny_split / "val" / "blue" / "huge.png", (1, 2, 3), size=(300, 300), fmt="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 300x300 is now a "bomb"
    for confine in (False, True):
        skipped = dict(datasets.scan_dataset(tiny_split, confine=confine).skipped)
        assert set(skipped) == {"train/red/notes.txt", "val/blue/huge.png"}
        assert "decompression bomb" in skipped["val/blue/huge.png"]
        assert not any(str(tiny_split) in r for r in skipped.values())


def test_a_confined_scan_names_folders_from_the_dataset_down(tmp_path):
    two = dataset(tmp_path / "two", ("good",))
    (two / "bad").mkdir()
    (two / "bad" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DatasetError) as e:
        datasets.scan_dataset(two, confine=True)
    assert "class folder two/bad has no usable image" in str(e.value) and str(tmp_path) not in str(e.value)


def test_image_errors_from_the_system_do_not_name_the_server_path(tmp_path):
    with pytest.raises(ImageReadError) as e:
        load_rgb(tmp_path)  # a folder where a photo was expected: errno EISDIR, str(e) names the path
    assert str(tmp_path) not in str(e.value) and e.value.name == tmp_path.name


def test_the_pixel_limit_holds_without_the_warning_filter(tmp_path, monkeypatch):
    # The filter is process-wide and the scan's threads share it; the limit must not depend on it.
    big = write_image(tmp_path / "big.png", (1, 2, 3), size=(300, 300), fmt="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)  # over it, under twice it: Pillow only warns
    monkeypatch.setattr("warnings.simplefilter", lambda *a, **k: None)  # as if another thread had reset it
    with pytest.raises(ImageReadError, match="decompression bomb"):
        load_rgb(big)


# The Data page (AppTest).

def texts(els):
    return " ".join(e.value for e in els)


def test_the_data_page_lists_the_offered_folders(app, tiny_folders, tiny_split):
    at = app()
    at.radio(key="_w.data_source").set_value("folder").run()
    box = at.selectbox(key="_w.folder_path")
    assert box.value is None and not at.success and "Choose one of the folders" in texts(at.info)
    assert sorted(box.options) == sorted(f"{tiny_folders.parent.name}/{n}" for n in ("tiny", "tinysplit"))
    assert not any(str(tiny_folders) in o for o in box.options)
    box.set_value(str(tiny_folders.resolve())).run()
    assert not at.exception and "16 training and 4 validation" in texts(at.success)
    assert at.session_state[S.FOLDER_PATH] == str(tiny_folders.resolve())


def test_no_offered_folder_is_said_in_words(app, monkeypatch):
    monkeypatch.setenv(server_folders.ROOTS_ENV, "")
    at = app(None, {S.DATA_SOURCE: "folder"})
    assert not at.exception and not [b for b in at.selectbox if b.key == "_w.folder_path"]
    assert "No server folders are offered on this server" in texts(at.info)
    assert not at.error and not at.success


@pytest.mark.parametrize("where", ["own photos", "above the root"])
def test_a_saved_setup_with_a_refused_folder_is_refused_and_trains_nothing(app, isolated_dirs, tiny_folders, where):
    target = (dataset(paths.DEFAULT_DATA_DIR / "own" / "abc123") if where == "own photos"
              else isolated_dirs.parent)
    at = app(None, {S.DATA_SOURCE: "folder", S.FOLDER_PATH: str(target)})
    assert not at.exception
    assert texts(at.error) == server_folders.REFUSAL and not at.success
    assert "No dataset is selected yet" in texts(at.info)
    assert at.selectbox(key="_w.folder_path").value is None  # shown as nothing chosen
    at.switch_page("pages/train.py").run()
    assert not at.exception and "No dataset is selected" in texts(at.info)
    assert not any("Start" in b.label for b in at.button)
    assert not (isolated_dirs / "runs").exists() or not any((isolated_dirs / "runs").iterdir())
