"""Data page, "Make your own classes": Teachable Machine's flow on core/data/own_dataset.py.

Name a dataset, add classes by name, add photos per class by upload or camera, remove or
rename.  Every change goes straight to disk through the core module (which checks each
photo at the image boundary); this module only draws the dataset as it is on disk and
turns clicks into core calls.  Which dataset is open is the store's ``OWN_DATASET``; the
rest here (messages, which uploads were handled) is per-tab UI state, not the setup.

Uploads are handled once: Streamlit keeps a file_uploader's files across reruns, so each
file's ``file_id`` is remembered, and after a batch the uploader gets a new key (empty
again: the photos now show as thumbnails instead).
"""
from __future__ import annotations

import re
import time

import streamlit as st

from core.data import own_dataset as own
from core import disk
from core.errors import TransferLabError
from ui import identity
from ui import state as S

THUMB_PX, PER_ROW = 96, 8
MSGS, SEEN, NONCE = "_own.msgs", "_own.seen", "_own.nonce"


def _md(text: str) -> str:
    """User text inside markdown: shown as typed, never as formatting, links or emoji."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _say(kind: str, text: str, fresh: bool = True) -> None:
    """A message shown above the classes until the next action."""
    if fresh:
        st.session_state[MSGS] = []
    st.session_state.setdefault(MSGS, []).append((kind, text))


def _do(action, *args, done=None) -> None:
    """Run a core change; its refusal (or a disk error) becomes a message, never a traceback."""
    try:
        out = action(*args)
    except TransferLabError as e:
        _say("error", _md(str(e)))
        return
    except OSError as e:
        _say("error", f"could not save the change on the server: {e.strerror or e}")
        return
    if done:
        _say("success", done(out))


def _create() -> None:
    def make(title):
        ds = own.create(title, identity.owner())
        S.put(S.OWN_DATASET, ds.id)
        st.session_state["_own.title"] = ""
        return ds
    _do(make, st.session_state.get("_own.title", ""),
        done=lambda ds: f"Dataset **{_md(ds.title)}** created: now add at least {own.MIN_CLASSES} classes.")


def _add_class(dataset_id: str) -> None:
    def add(name):
        clean = own.add_class(dataset_id, name)
        st.session_state["_own.new_class"] = ""
        return clean
    _do(add, st.session_state.get("_own.new_class", ""),
        done=lambda c: f"Class **{_md(c)}** added: give it at least {own.MIN_IMAGES} photos.")


def _rename(dataset_id: str, old: str, key: str) -> None:
    _do(own.rename_class, dataset_id, old, st.session_state.get(key, ""),
        done=lambda new: f"Class **{_md(old)}** is now **{_md(new)}**.")


def _report(result: own.AddResult, class_name: str) -> None:
    n = len(result.added)
    _say("success" if n else "info", f"Added {_count(n, 'photo', 'photos')} to **{_md(class_name)}**.")
    for name, holder in result.duplicates:
        where = "this class" if holder == class_name else f"class **{_md(holder)}**"
        _say("info", f"Skipped **{_md(name)}**: the same photo is already in {where}.", fresh=False)
    for name, reason in result.refused:
        _say("error", f"Refused **{_md(name)}**: {_md(reason)}.", fresh=False)


def _add_files(dataset_id: str, class_name: str, files) -> None:
    seen = st.session_state.setdefault(SEEN, set())
    new = [f for f in files if f.file_id not in seen]
    if not new:
        return
    with st.spinner(f"Checking {_count(len(new), 'photo', 'photos')}…"):
        try:
            disk.require_room(identity.owner(), sum(f.size for f in new), _count(len(new), "photo", "photos"))
            _report(own.add_images(dataset_id, class_name, [(f.name, f.getvalue()) for f in new]), class_name)
        except TransferLabError as e:
            _say("error", _md(str(e)))
    seen.update(f.file_id for f in new)
    st.session_state[NONCE] = st.session_state.get(NONCE, 0) + 1
    st.rerun()  # the new thumbnails, counts, readiness and sidebar in one go


@st.cache_data(max_entries=4000, show_spinner=False)
def _thumbnail(path: str):
    return own.thumbnail(path, THUMB_PX * 2)  # photos are named by content: a path never changes image


def _class_box(ds: own.OwnDataset, name: str) -> None:
    n = ds.counts[name]
    need = own.MIN_IMAGES - n
    with st.container(border=True):
        st.markdown(f"**{_md(name)}** · {_count(n, 'photo', 'photos')}" + (f" · needs {need} more" if need > 0 else ""))
        try:
            photos = own.photos(ds.id, name) if n else []
        except TransferLabError:  # renamed or removed by another tab of the same id: its next rerun shows it
            photos = []
        for start in range(0, len(photos), PER_ROW):
            for col, photo in zip(st.columns(PER_ROW), photos[start:start + PER_ROW]):
                try:
                    col.image(_thumbnail(str(photo)), width=THUMB_PX)
                except TransferLabError:
                    continue  # removed by another tab of the same id since the listing
                col.button("Remove", key=f"_own.rm.{ds.id}.{name}.{photo.name}", type="tertiary",
                           help="Remove this photo", on_click=_do, args=(own.remove_image, ds.id, name, photo.name))
        files = st.file_uploader(f"Add photos to {_md(name)}", accept_multiple_files=True,
                                 key=f"_own.up.{ds.id}.{name}.{st.session_state.get(NONCE, 0)}")
        if files:
            _add_files(ds.id, name, files)
        with st.expander(f"Rename or remove {_md(name)}"):
            key = f"_own.rn.{ds.id}.{name}"
            st.text_input(f"New name for {_md(name)}", key=key, max_chars=own.MAX_CLASS_NAME)
            c1, c2 = st.columns(2)
            c1.button("Rename", key=f"{key}.go", on_click=_rename, args=(ds.id, name, key))
            c2.button(f"Remove {_md(name)} and its {_count(n, 'photo', 'photos')}", key=f"_own.rmc.{ds.id}.{name}",
                      on_click=_do, args=(own.remove_class, ds.id, name),
                      kwargs={"done": lambda _: f"Class **{_md(name)}** removed."})


def _camera(ds: own.OwnDataset) -> None:
    if not ds.classes or not st.toggle("Take photos with the camera", key="_own.camera"):
        return
    target = st.selectbox("Shots go to class", ds.classes, key=f"_own.camera_class.{ds.id}")
    shot = st.camera_input("Take a photo (then “Clear photo” to take the next)", key=f"_own.shot.{ds.id}")
    seen = st.session_state.setdefault(SEEN, set())
    if shot is not None and shot.file_id not in seen:
        seen.add(shot.file_id)
        try:
            disk.require_room(identity.owner(), shot.size, "this photo")
            _report(own.add_images(ds.id, target, [(f"camera-{time.strftime('%H%M%S')}.jpg", shot.getvalue())]), target)
        except TransferLabError as e:
            _say("error", _md(str(e)))
        st.rerun()


def render() -> None:
    """The editor.  Afterwards ``S.data_path()`` is the dataset's folder exactly when it is ready."""
    ss = st.session_state
    mine = {d.id: d for d in own.list_datasets(identity.owner())}
    if ss[S.OWN_DATASET] not in mine and ss[S.OWN_DATASET] != next(iter(mine), None):
        S.put(S.OWN_DATASET, next(iter(mine), None))  # deleted, or another tab's: this tab's newest, if any
    c1, c2 = st.columns(2)
    if mine:
        c1.selectbox("Your datasets", list(mine), **S.bind(S.OWN_DATASET), format_func=lambda i: (
            f"{mine[i].title} — {_count(len(mine[i].classes), 'class', 'classes')}, "
            f"{_count(sum(mine[i].counts.values()), 'photo', 'photos')}"))
        c1.caption("Your datasets belong to this tab's address (the `sid` in the URL): "
                   "bookmark it to come back to them after closing the browser.")
    c2.text_input("New dataset name", key="_own.title", placeholder="e.g. my insects", max_chars=own.MAX_TITLE)
    c2.button("Create dataset", on_click=_create, icon=":material/add:")
    for kind, text in ss.get(MSGS, []):
        getattr(st, kind)(text)
    ds = mine.get(ss[S.OWN_DATASET])
    if ds is None:
        st.info(f"Name a dataset and press **Create dataset**; then add at least {own.MIN_CLASSES} classes "
                f"with at least {own.MIN_IMAGES} photos each.")
        return
    st.caption(f"Class names can be in any script. At least {own.MIN_CLASSES} classes with {own.MIN_IMAGES} photos "
               "each: a share of every class (the validation fraction below) is kept aside to measure accuracy, "
               "the rest is learnt from. Unreadable files are refused with the reason; the same photo twice is skipped.")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input("New class name", key="_own.new_class", placeholder="e.g. ants, 蚂蚁, пчела, ankle boot",
                  max_chars=own.MAX_CLASS_NAME)
    c2.button("Add class", on_click=_add_class, args=(ds.id,), icon=":material/add:")
    for name in ds.classes:
        _class_box(ds, name)
    _camera(ds)
    problems = own.missing(ds)
    if problems:
        st.warning("**Not ready to train yet:** " + "; ".join(_md(p) for p in problems) + ".")
    else:
        st.caption("Ready: Model, Train and Predict use this dataset.")
    with st.expander("Delete this dataset"):
        st.button(f"Delete {_md(ds.title)} and all its photos", key=f"_own.delete.{ds.id}", on_click=_do,
                  args=(own.delete, ds.id), kwargs={"done": lambda _: f"Dataset **{_md(ds.title)}** deleted."})
