"""Datasets made in the browser (core/data/own_dataset.py): names in any script, hostile
names, duplicates, broken files, rename/remove, readiness, and that the result is an
ordinary ImageFolder the scanner reads with the names the user typed."""
import io
import unicodedata

import pytest
from PIL import Image

from core.data import own_dataset as own
from core.data.datasets import scan_dataset
from core.errors import DatasetError


def jpeg(color, size=(48, 40)) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, "JPEG")
    return b.getvalue()


def photos(n, base):
    return [(f"p{i}.jpg", jpeg((base, 10 * i, 255 - base))) for i in range(n)]


@pytest.fixture
def ds(isolated_dirs):
    return own.create("My insects", owner="a1b2c3d4e5f6")


def test_names_in_any_script_are_the_labels_the_scanner_reads(ds):
    for k, name in enumerate(["蚂蚁", "пчела", "ankle boot"]):
        assert own.add_class(ds.id, name) == name
        assert own.add_images(ds.id, name, photos(5, 60 * k)).added == [f"p{i}.jpg" for i in range(5)]
    loaded = own.load(ds.id)
    assert loaded.title == "My insects" and loaded.classes == ["蚂蚁", "пчела", "ankle boot"]
    assert own.missing(loaded) == [] and own.ready_path(ds.id, ds.owner) == str(ds.root)
    scanned = scan_dataset(ds.root)
    assert scanned.classes == sorted(["蚂蚁", "пчела", "ankle boot"]) and not scanned.skipped
    assert len(scanned.train) + len(scanned.val) == 15
    assert ds.root.name.startswith("my-insects-") and ds.root.parent == own.own_root()


def test_names_are_normalised_and_unique_case_insensitively(ds):
    decomposed = unicodedata.normalize("NFD", "Café")
    assert own.add_class(ds.id, f"  {decomposed}   au\tlait ") == "Café au lait"  # NFC, single spaces
    for same in ("café au lait", "CAFÉ AU LAIT", unicodedata.normalize("NFD", "café au lait")):
        with pytest.raises(own.OwnDatasetError, match="already a class"):
            own.add_class(ds.id, same)


@pytest.mark.parametrize("bad, why", [
    ("", "empty"), ("   ", "empty"), (".", "reserved"), ("..", "reserved"), (".hidden", "reserved"),
    ("../../etc", "slash"), ("a/b", "slash"), ("a\\b", "slash"), ("/abs", "slash"), ("bell\x07", "control"),
    ("nul\x00byte", "control"), ("x" * 61, "at most 60"), ("__MACOSX", "reserved"), ("dataset.json", "reserved"),
    (42, "must be text")])
def test_hostile_or_empty_class_names_are_refused_and_nothing_is_written(ds, bad, why):
    with pytest.raises(own.OwnDatasetError, match=why):
        own.add_class(ds.id, bad)
    assert sorted(p.name for p in ds.root.iterdir() if not p.name.startswith(".")) == ["dataset.json"]
    assert not (own.own_root().parent / "etc").exists()


def test_train_beside_val_is_refused_because_it_would_read_as_a_split(ds):
    own.add_class(ds.id, "train")  # a locomotive is a fine class on its own
    with pytest.raises(own.OwnDatasetError, match="train/val split"):
        own.add_class(ds.id, "Val")


def test_broken_files_are_refused_with_the_reason_and_duplicates_skipped(ds):
    own.add_class(ds.id, "ants")
    own.add_class(ds.id, "bees")
    good = jpeg((200, 0, 0))
    truncated = good[: len(good) // 2]
    r = own.add_images(ds.id, "ants", [("a.jpg", good), ("half.jpg", truncated), ("notes.txt", b"hello"),
                                       ("empty.png", b""), ("again.jpg", good)])
    assert r.added == ["a.jpg"] and r.duplicates == [("again.jpg", "ants")]
    reasons = dict(r.refused)
    assert reasons["half.jpg"] == "truncated or damaged image data"
    assert "not an image" in reasons["notes.txt"] and reasons["empty.png"] == "empty file"
    # The same bytes into another class: skipped, naming where they already are.
    assert own.add_images(ds.id, "bees", [("copy.jpg", good)]).duplicates == [("copy.jpg", "ants")]
    assert own.load(ds.id).counts == {"ants": 1, "bees": 0}
    assert not [p for p in ds.root.rglob("*") if p.name.endswith(".part")]  # no temporary file left behind


def test_stored_names_are_generated_from_content_with_the_decoded_formats_suffix(ds):
    own.add_class(ds.id, "x")
    png = io.BytesIO()
    Image.new("RGBA", (30, 30), (1, 2, 3, 100)).save(png, "PNG")
    ico = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(ico, "ICO")
    r = own.add_images(ds.id, "x", [("../../evil.jpg.exe", jpeg((5, 5, 5))), ("photo.jpg", png.getvalue()),
                                    ("icon.ico", ico.getvalue())])
    assert r.added == ["evil.jpg.exe", "photo.jpg", "icon.ico"]  # the last component only, for messages
    suffixes = sorted(p.suffix for p in own.photos(ds.id, "x"))
    assert suffixes == [".jpg", ".png", ".png"]  # a PNG named .jpg is stored as .png; ICO re-encoded as PNG
    assert all(len(p.stem) == 16 for p in own.photos(ds.id, "x"))


def test_rename_and_remove(ds):
    own.add_class(ds.id, "ants")
    own.add_class(ds.id, "bees")
    own.add_images(ds.id, "ants", photos(2, 10))
    assert own.rename_class(ds.id, "ants", "Муравьи") == "Муравьи"
    assert own.load(ds.id).classes == ["Муравьи", "bees"] and own.load(ds.id).counts["Муравьи"] == 2
    assert own.rename_class(ds.id, "bees", "Bees") == "Bees"  # its own name in other capitals is no clash
    with pytest.raises(own.OwnDatasetError, match="already a class"):
        own.rename_class(ds.id, "Bees", "муравьи")
    with pytest.raises(own.OwnDatasetError, match="slash"):
        own.rename_class(ds.id, "Bees", "../x")
    first = own.photos(ds.id, "Муравьи")[0].name
    own.remove_image(ds.id, "Муравьи", first)
    with pytest.raises(own.OwnDatasetError, match="removed already"):
        own.remove_image(ds.id, "Муравьи", first)
    with pytest.raises(own.OwnDatasetError, match="no photo"):
        own.remove_image(ds.id, "Муравьи", "../dataset.json")
    own.remove_class(ds.id, "Bees")
    with pytest.raises(own.OwnDatasetError, match="no class named"):
        own.remove_class(ds.id, "Bees")
    assert own.load(ds.id).classes == ["Муравьи"] and own.load(ds.id).counts == {"Муравьи": 1}


def test_readiness_says_exactly_what_is_missing(ds):
    assert own.missing(own.load(ds.id)) == ["add at least 2 classes (it has 0)"]
    own.add_class(ds.id, "ants")
    own.add_images(ds.id, "ants", photos(5, 10))
    assert own.missing(own.load(ds.id)) == ["add at least 2 classes (it has 1: 'ants')"]
    own.add_class(ds.id, "bees")
    own.add_images(ds.id, "bees", photos(4, 90))
    assert own.missing(own.load(ds.id)) == ["class 'bees' needs 1 more photo (it has 4, at least 5 are needed)"]
    assert own.ready_path(ds.id, ds.owner) is None
    before = own.fingerprint(ds.root)
    own.add_images(ds.id, "bees", [("last.jpg", jpeg((1, 200, 1)))])
    assert own.missing(own.load(ds.id)) == [] and own.ready_path(ds.id, ds.owner) == str(ds.root)
    assert own.fingerprint(ds.root) != before  # a scan cache keyed by it sees the new photo


def test_lists_are_per_owner_and_ids_are_checked(isolated_dirs):
    a = own.create("蚂蚁 и пчёлы", owner="aaaaaaaaaaaa")
    b = own.create("Shoes", owner="bbbbbbbbbbbb")
    assert a.root.name.startswith("dataset-")  # no ASCII in the title: a neutral slug, the title kept as typed
    assert [d.title for d in own.list_datasets("aaaaaaaaaaaa")] == ["蚂蚁 и пчёлы"]
    assert [d.id for d in own.list_datasets("bbbbbbbbbbbb")] == [b.id]
    own.add_class(b.id, "boots"), own.add_class(b.id, "sandals")
    for c, base in (("boots", 10), ("sandals", 90)):
        own.add_images(b.id, c, photos(5, base))
    assert own.ready_path(b.id, "bbbbbbbbbbbb") == str(b.root)
    assert own.ready_path(b.id, "aaaaaaaaaaaa") is None  # a setup naming another visitor's dataset reaches nothing
    for bad in ("../" + a.id, "x", None, a.id + "/.."):
        with pytest.raises(DatasetError):
            own.dataset_dir(bad)
        assert own.ready_path(bad, "aaaaaaaaaaaa") is None
    own.delete(a.id)
    assert own.list_datasets("aaaaaaaaaaaa") == [] and own.ready_path(a.id, "aaaaaaaaaaaa") is None
    with pytest.raises(own.OwnDatasetError, match="empty"):
        own.create("  ", owner="aaaaaaaaaaaa")


def test_two_tabs_adding_the_same_photos_at_once_store_each_once(ds):
    from concurrent.futures import ThreadPoolExecutor
    own.add_class(ds.id, "ants")
    batch = photos(5, 30)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: own.add_images(ds.id, "ants", batch), range(4)))
    assert sum(len(r.added) for r in results) == 5 and sum(len(r.duplicates) for r in results) == 15
    assert own.load(ds.id).counts == {"ants": 5}
