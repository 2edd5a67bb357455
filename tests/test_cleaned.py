"""Cleaned datasets: exclusions, relabels and undo; the source's bytes never change (also
through a training run on the cleaning); only the owner sees, changes or trains on one;
a source that is no longer the visitor's makes it unusable."""
import hashlib
import json
from pathlib import Path

import pytest

from core import paths
from core.access import OPERATOR_VIEWER, Viewer
from core.audit import cleaned
from core.audit.cleaned import CleanedError
from tests.conftest import ANTS_BEES, VISITOR, OTHER_VISITOR, owner_of_key, write_image

A, B = Viewer(owner_of_key(VISITOR)), Viewer(owner_of_key(OTHER_VISITOR))


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def folder_source(root: Path, viewer=A) -> dict:
    return cleaned.make_source("folder", str(root), root.name, 0.2, 0, viewer.owner)


def test_exclude_relabel_restore_and_undo(isolated_dirs, tiny_split):
    c = cleaned.create(folder_source(tiny_split), A)
    assert c.title == "tinysplit · cleaned" and c.owner == A.owner
    base = cleaned.dataset(c.id, A)
    assert (len(base.train), len(base.val)) == (16, 8) and base.cleaning["version"] == 0
    red = base.classes.index("red")
    cleaned.exclude(c.id, A, ["train/red/r0.jpg", "val/blue/b1.png"])
    cleaned.relabel(c.id, A, {"train/red/r1.jpg": "blue"}, base.classes)
    ds = cleaned.dataset(c.id, A)
    rels = {cleaned.rel_path(ds.root, p): y for p, y in ds.train + ds.val}
    assert "train/red/r0.jpg" not in rels and "val/blue/b1.png" not in rels
    assert rels["train/red/r1.jpg"] == base.classes.index("blue") and rels["train/red/r2.jpg"] == red
    assert (len(ds.train), len(ds.val)) == (15, 7) and ds.cleaning == {
        "id": c.id, "title": c.title, "source": "tinysplit", "version": 2, "excluded": 2, "relabelled": 1}
    # Relabelling an excluded photo brings it back with its new class; giving back its folder's class drops the relabel.
    cleaned.relabel(c.id, A, {"train/red/r0.jpg": "blue"}, base.classes)
    c = cleaned.relabel(c.id, A, {"train/red/r1.jpg": "red"}, base.classes, given={"train/red/r1.jpg": "red"})
    assert c.exclude == ["val/blue/b1.png"] and c.relabel == {"train/red/r0.jpg": "blue"}
    c = cleaned.restore(c.id, A, ["train/red/r0.jpg", "val/blue/b1.png"])
    assert c.exclude == [] and c.relabel == {}
    # Undo walks back one change at a time, saying which.
    steps = []
    while True:
        c, what = cleaned.undo(c.id, A)
        if what is None:
            break
        steps.append((what, c.exclude, c.relabel))
    assert [s[0] for s in steps] == ["restored 2 photos", "relabelled 1 photo", "relabelled 1 photo",
                                     "relabelled 1 photo", "excluded 2 photos"]
    assert steps[0][1:] == (["val/blue/b1.png"], {"train/red/r0.jpg": "blue"})
    assert steps[-1][1:] == ([], {})
    # A change that changes nothing is no undo step.
    before = cleaned.load(c.id, A).version
    cleaned.restore(c.id, A, ["train/red/r5.jpg"])
    assert cleaned.load(c.id, A).version == before and cleaned.load(c.id, A).history == []


@pytest.mark.parametrize("bad, says", [("../x.jpg", "not a photo path"), ("/etc/passwd", "not a photo path"),
                                       ("", "not a photo path")])
def test_paths_outside_the_source_are_refused(isolated_dirs, tiny_split, bad, says):
    c = cleaned.create(folder_source(tiny_split), A)
    with pytest.raises(CleanedError, match=says):
        cleaned.exclude(c.id, A, [bad])
    with pytest.raises(CleanedError, match="no class named 'green'"):
        cleaned.relabel(c.id, A, {"train/red/r1.jpg": "green"}, ["blue", "red"])
    assert cleaned.load(c.id, A).version == 0


def test_the_source_bytes_never_change_even_through_training(isolated_dirs, tiny_split):
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    before = digests(tiny_split)
    c = cleaned.create(folder_source(tiny_split), A)
    cleaned.exclude(c.id, A, ["train/blue/b0.png", "val/red/r0.jpg"])
    cleaned.relabel(c.id, A, {"train/red/r3.jpg": "blue"}, ["blue", "red"])
    cfg = ExperimentConfig(data=str(tiny_split), arch="mobilenet_v3_small", weights="none", freeze="none", name="c1",
                           train=TrainConfig(epochs=1, batch_size=8), confine=True, owner=A.owner, cleaning=c.id)
    run_dir, _, _ = run_experiment(cfg, runs_dir=isolated_dirs / "runs")
    assert digests(tiny_split) == before
    config = json.loads((run_dir / "config.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert config["cleaning"] == c.id and config["cleaned"]["version"] == 2 and config["cleaned"]["excluded"] == 2
    assert ["train/blue/b0.png", 0] not in split["train"] and ["train/red/r3.jpg", 0] in split["train"]
    assert len(split["train"]) == 15 and len(split["val"]) == 7


def test_the_demo_photos_stay_as_shipped(isolated_dirs):
    if ANTS_BEES is None:
        pytest.skip("../shared/datasets/hymenoptera_data is absent")
    before = digests(ANTS_BEES)
    source = cleaned.make_source("demo", str(ANTS_BEES), "ants vs bees (demo)", 0.2, 0, A.owner)
    c = cleaned.create(source, A)
    cleaned.exclude(c.id, A, ["train/ants/imageNotFound.gif"])
    cleaned.relabel(c.id, A, {"val/bees/2407809945_fb525ef54d.jpg": "ants"}, ["ants", "bees"])
    ds = cleaned.dataset(c.id, A)
    assert len(ds.train) == 244 and len(ds.val) == 153
    cleaned.undo(c.id, A)
    assert digests(ANTS_BEES) == before
    assert not any(p.is_relative_to(ANTS_BEES.resolve()) for p in (paths.DEFAULT_DATA_DIR / "cleaned").rglob("*"))


def test_only_the_owner_sees_changes_or_trains_on_a_cleaning(isolated_dirs, tiny_split):
    from core.training.experiment import ExperimentConfig, run_experiment
    c = cleaned.create(folder_source(tiny_split), A)
    assert [x.id for x in cleaned.list_cleaned(A)] == [c.id] and cleaned.list_cleaned(B) == []
    for attempt in (lambda: cleaned.load(c.id, B), lambda: cleaned.dataset(c.id, B),
                    lambda: cleaned.exclude(c.id, B, ["train/red/r0.jpg"]),
                    lambda: cleaned.relabel(c.id, B, {"train/red/r0.jpg": "blue"}, ["blue", "red"]),
                    lambda: cleaned.restore(c.id, B, ["train/red/r0.jpg"]), lambda: cleaned.undo(c.id, B),
                    lambda: cleaned.delete(c.id, B)):
        with pytest.raises(CleanedError, match=f"no cleaned dataset with id '{c.id}'"):  # as if it did not exist
            attempt()
    cfg = ExperimentConfig(data=str(tiny_split), arch="mobilenet_v3_small", weights="none", owner=B.owner, cleaning=c.id)
    with pytest.raises(CleanedError, match="no cleaned dataset"):
        run_experiment(cfg, runs_dir=isolated_dirs / "runs")
    assert cleaned.load(c.id, A).version == 0 and not (isolated_dirs / "runs").exists()
    assert cleaned.load(c.id, OPERATOR_VIEWER).id == c.id  # the operator may, as everywhere
    cleaned.delete(c.id, A)
    with pytest.raises(CleanedError, match="no cleaned dataset"):
        cleaned.load(c.id, A)


def test_a_source_that_is_not_the_visitors_is_refused(isolated_dirs, tiny_split, monkeypatch):
    from core.data import own_dataset
    # Another visitor's upload and another visitor's own classes.
    theirs = paths.uploads_dir(B.owner) / "zip-0123456789abcdef" / "photos"
    for i in range(3):
        write_image(theirs / "cats" / f"c{i}.jpg", (200, 10 * i, 0))
        write_image(theirs / "dogs" / f"d{i}.jpg", (0, 10 * i, 200))
    with pytest.raises(CleanedError, match="no longer available to you"):
        cleaned.make_source("zip", str(theirs), "theirs.zip", 0.2, 0, A.owner)
    assert cleaned.make_source("zip", str(theirs), "theirs.zip", 0.2, 0, B.owner)["kind"] == "zip"
    own = own_dataset.create("Mine", B.owner)
    with pytest.raises(CleanedError, match="no longer available"):
        cleaned.make_source("own", str(own.root), "Mine", 0.2, 0, A.owner, own_id=own.id)
    # The data folder is never a server folder, whatever path is claimed.
    with pytest.raises(CleanedError, match="no longer available"):
        cleaned.make_source("folder", str(theirs), "x", 0.2, 0, A.owner)
    # A folder the operator stops offering takes its cleanings with it, until offered again.
    c = cleaned.create(folder_source(tiny_split), A)
    monkeypatch.setenv("TRANSFERLAB_DATASET_ROOTS", str(isolated_dirs / "elsewhere"))
    with pytest.raises(CleanedError, match=r"tinysplit\) is no longer available to you"):
        cleaned.dataset(c.id, A)


def test_a_visitor_keeps_a_bounded_number(isolated_dirs, tiny_split, monkeypatch):
    monkeypatch.setattr(cleaned, "MAX_PER_OWNER", 2)
    first = cleaned.create(folder_source(tiny_split), A)
    second = cleaned.create(folder_source(tiny_split), A)
    assert second.title == "tinysplit · cleaned (2)"
    assert cleaned.find_for(folder_source(tiny_split), A).id == second.id
    with pytest.raises(CleanedError, match="2 cleaned datasets, the most"):
        cleaned.create(folder_source(tiny_split), A)
    cleaned.create(folder_source(tiny_split, B), B)  # another visitor's count is their own
    from core import disk
    disk.delete_owner_data(A.owner)  # the operator deleting a visitor's data takes their cleanings too
    assert cleaned.list_cleaned(A) == [] and len(cleaned.list_cleaned(B)) == 1 and first.id
