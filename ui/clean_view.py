"""The Clean page's frame: which dataset is audited, the audit itself, the cleaned dataset
on the Data page, and the one-click retrain.  The galleries are ``clean_gallery.py``.

What is audited is always a **source** (the demo, an offered folder, an upload, the
visitor's own classes), never a cleaned dataset: the findings stay where they are while
the visitor decides, and each one shows what was decided about it (excluded, relabelled,
kept), which is how a decision is seen and undone.  With a cleaned dataset selected on
Data, its source is audited and the decisions go to it; otherwise the first decision
makes a cleaned dataset of the current selection (``core/audit/cleaned.py``).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace

import streamlit as st

from core.access import Viewer
from core.audit import cleaned
from core.audit.cleaned import Cleaned, CleanedError
from core.data import own_dataset
from core.data.datasets import Dataset
from core.training.feature_cache import files_signature

from . import common, identity
from . import state as S

SPEED = (8, 35)   # photos per second through MobileNetV2 on this project's busy and quiet 2-core CPU (measured)


@dataclass
class Target:
    ds: Dataset                  # the source, scanned, nothing applied
    source: dict                 # its record (cleaned.make_source)
    cleaning: Cleaned | None     # the visitor's cleaning of it, once a decision made one


@st.cache_data(show_spinner="Reading the cleaned dataset…", max_entries=16)
def _cached_cleaned(cleaned_id: str, version: int, owner: str, operator: bool, fingerprint: str | None):
    """``version`` and ``fingerprint`` are part of the key only: a decision or a photo added
    to an own-classes source reads it anew."""
    return cleaned.dataset(cleaned_id, Viewer(owner, operator))


def _fingerprint(source: dict) -> str | None:
    return own_dataset.fingerprint(source["path"]) if source.get("kind") == "own" else None


def cleaned_dataset(cleaned_id) -> Dataset:
    """The cleaned dataset, ready to train on (``common.current_dataset`` for the "cleaned" source)."""
    viewer = identity.viewer()
    c = cleaned.load(cleaned_id, viewer)
    return _cached_cleaned(c.id, c.version, viewer.owner, viewer.operator, _fingerprint(c.source))


def target(viewer: Viewer) -> Target:
    """The source under review and its cleaning; says why and stops when there is none."""
    ss = st.session_state
    if ss[S.DATA_SOURCE] == "cleaned":
        if ss[S.CLEANED] is None:
            st.info("Choose one of your cleaned datasets on the Data page, or another dataset to audit.")
            common.page_link("Data")
            st.stop()
        try:
            c = cleaned.load(ss[S.CLEANED], viewer)
            root = cleaned.check_source(c.source, c.owner)
        except CleanedError as e:
            st.info(f"The cleaned dataset chosen on the Data page cannot be used: {e}.")
            common.page_link("Data")
            st.stop()
        ds = common.cached_scan(str(root), c.source["val_split"], c.source["seed"], _fingerprint(c.source))
        return Target(ds, c.source, c)
    ds = common.require_dataset()
    own_id = ss[S.OWN_DATASET] if ss[S.DATA_SOURCE] == "own" else None
    split = (ds.val_split, ds.seed) if ds.layout == "folders" else (0.2, 0)  # a given split has no knobs
    try:
        source = cleaned.make_source(ss[S.DATA_SOURCE], str(ds.root), S.data_label(), *split, viewer.owner, own_id)
    except CleanedError as e:
        st.info(f"This dataset cannot be cleaned here: {e}.")
        st.stop()
    mine = ss[S.CLEANED]
    found = None
    if mine:
        try:
            c = cleaned.load(mine, viewer)
            found = c if (c.source["path"], c.source["val_split"], c.source["seed"]) == \
                (source["path"], source["val_split"], source["seed"]) else None
        except CleanedError:
            pass
    return Target(ds, source, found or cleaned.find_for(source, viewer))


def audit_arch() -> str | None:
    """The Model page's architecture where its ImageNet weights are here, else MobileNetV2's."""
    from core.models.zoo import pretrained_available
    arch = st.session_state[S.ARCH]
    return arch if pretrained_available(arch) else "mobilenet_v2" if pretrained_available("mobilenet_v2") else None


def audit(t: Target):
    """The audit of the source: at once when its features are cached (about a second),
    else after a button that says what it costs; kept in the tab while the files stay."""
    from core.audit import run
    from core.device import pick_device
    from core.training.feature_cache import default_cache
    from . import inside_view
    ds, ss = t.ds, st.session_state
    arch = audit_arch()
    if arch is None:
        st.warning("No ImageNet weights are on this machine, and the audit compares photos through a pretrained "
                   "network. Ask the operator to add MobileNetV2's (see the README).")
        return None
    files = ds.train + ds.val
    key = (str(ds.root), arch, hashlib.blake2b(json.dumps(files_signature(files)).encode(), digest_size=12).hexdigest())
    kept = ss.get("_clean_audit")
    if kept and kept[0] == key:
        return kept[1]
    body = inside_view.body("imagenet", arch, len(ds.classes), 0)
    device, cache = pick_device("auto"), default_cache()
    if not run.is_cached(ds, body, device, cache):
        n = len(files)
        ask = st.empty()  # the cost and the button leave once pressed
        with ask.container():
            st.caption(f"The audit runs each of the **{n} photos** through {arch} (ImageNet weights) once, about "
                       f"{n / SPEED[1]:.0f}–{n / SPEED[0]:.0f} s on this server's CPU; after that it takes about a "
                       "second, and a frozen run of this dataset reuses the validation photos' pass.")
            pressed = st.button(f"Audit {n} photos", icon=":material/troubleshoot:", type="primary", key="clean_audit")
        if not pressed:
            return None
        ask.empty()
    bar = st.progress(0.0, text="Auditing…")
    t0 = time.perf_counter()
    report = run.audit(ds, body, device, cache, seed=0,
                       progress=lambda p: bar.progress(min(p["done"] / max(p["total"], 1), 1.0),
                                                       text=f"{p['phase']}: {p['done']}/{p['total']}"))
    bar.empty()
    ss["_clean_audit"] = (key, report, time.perf_counter() - t0)
    return report


def seconds_of_last_audit() -> float | None:
    kept = st.session_state.get("_clean_audit")
    return kept[2] if kept else None


def reviewed(cleaned_id: str | None) -> set[str]:
    """Photos this visitor marked "keep" in that cleaning (a saved setup is checked, not trusted)."""
    marks = st.session_state[S.CLEAN_REVIEWED]
    got = marks.get(cleaned_id) if isinstance(marks, dict) and cleaned_id else None
    return {p for p in got if isinstance(p, str)} if isinstance(got, list) else set()


def mark(cleaned_id: str, paths: list[str], keep: bool) -> None:
    marks = dict(st.session_state[S.CLEAN_REVIEWED]) if isinstance(st.session_state[S.CLEAN_REVIEWED], dict) else {}
    have = reviewed(cleaned_id)
    have = have | set(paths) if keep else have - set(paths)
    marks[cleaned_id] = sorted(have)
    S.put(S.CLEAN_REVIEWED, marks)


def ensure(t: Target, viewer: Viewer) -> Cleaned:
    """The cleaning decisions go to, made on the first one."""
    if t.cleaning is None:
        t.cleaning = cleaned.create(t.source, viewer)
    if st.session_state[S.CLEANED] != t.cleaning.id:
        S.put(S.CLEANED, t.cleaning.id)
    return t.cleaning


def data_section() -> None:
    """The Data page's "Cleaned" source: the visitor's cleaned datasets to choose from."""
    viewer = identity.viewer()
    mine = {c.id: c for c in cleaned.list_cleaned(viewer)}
    if not mine:
        st.info("You have no cleaned dataset yet. The Clean page audits the dataset you use for mislabelled photos, "
                "duplicates, train/val leaks and outliers; your first decision there makes one.")
        common.page_link("Clean")
        return
    bound = S.bind(S.CLEANED)
    if st.session_state[bound["key"]] not in mine:
        st.session_state[bound["key"]] = None
    st.selectbox("Cleaned dataset", list(mine), format_func=lambda i: mine[i].title, placeholder="Choose one",
                 help="Made on the Clean page: a dataset you use, minus the photos you excluded, with the classes "
                      "you corrected. The source's files stay as they are.", **bound)
    c = mine.get(st.session_state[S.CLEANED])
    if c is not None:
        st.caption(f"From **{c.source['label']}**: {len(c.exclude)} photo{'s' * (len(c.exclude) != 1)} excluded, "
                   f"{len(c.relabel)} relabelled. Review, undo or continue on the Clean page.")


def retrain(t: Target, queue, owner: str, both: bool):
    """One job: the current setup on the cleaned dataset (and on its source, for Compare)."""
    c = t.cleaning
    S.put(S.DATA_SOURCE, "cleaned")
    S.put(S.CLEANED, c.id)
    after_ds = cleaned_dataset(c.id)
    arch, stamp = st.session_state[S.ARCH], time.strftime("%H%M%S")
    after = common.experiment(after_ds, name=f"{arch}-cleaned-{stamp}")
    runs = [("after cleaning", after, len(after_ds.train), len(after_ds.val))]
    if both:  # the same setup on the source as it is: the "before" of Compare
        before = replace(after, data=str(t.ds.root), cleaning=None, name=f"{arch}-uncleaned-{stamp}")
        runs.insert(0, ("before cleaning", before, len(t.ds.train), len(t.ds.val)))
    return queue.submit(owner, f"Before and after cleaning · {c.title}", runs)
