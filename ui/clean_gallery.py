"""The Clean page's galleries: one tab per finding, worst first, a decision per photo.

Each photo's decision is a segmented control that is a view of the cleaned dataset (and of
the "keep" marks in the visitor's setup): it shows what was decided, a click changes it,
clicking the chosen one again takes the decision back.  Bulk buttons make one undo step.
Paths in the cleaned dataset are the photos' paths under the source folder.
"""
from __future__ import annotations

import hashlib
import io

import streamlit as st

from core.audit import cleaned
from core.audit.cleaned import CleanedError

from . import clean_view, identity

PAGE = 12            # cards per tab before "Show more"
PAIR_WIDTH = 200     # pixels per photo of a pair
CONFIDENT = 0.25     # bulk relabel: where the head gives the given label at most this (it is 75% sure of another)
ERROR = "_clean_error"


@st.cache_data(show_spinner=False, max_entries=512)
def thumb(path: str, mtime: float, size: int = 200) -> bytes | None:
    """A square JPEG thumbnail (``mtime`` keys a changed photo)."""
    from core.data.own_dataset import thumbnail
    try:
        buf = io.BytesIO()
        thumbnail(path, size).save(buf, "JPEG", quality=85)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - the photo changed or went since the audit: a card without a picture
        return None


def _show(path: str, width="stretch") -> None:
    import os
    try:
        data = thumb(path, os.stat(path).st_mtime)
    except OSError:
        data = None
    if data:
        st.image(data, width=width)
    else:
        st.caption("(this photo can no longer be read)")


def _decide(t, excluded: dict, labels: dict, what: str, keep: list[str] = (), unkeep: list[str] = ()) -> None:
    """Apply decisions to the cleaning (made now if needed) as one undo step; a refusal is
    kept for the page to show (callbacks cannot draw)."""
    viewer = identity.viewer()
    try:
        c = clean_view.ensure(t, viewer)
        if excluded or labels:
            t.cleaning = cleaned.change(c.id, viewer, excluded, labels, t.ds.classes, what)
        if keep:
            clean_view.mark(c.id, list(keep), True)
        if unkeep:
            clean_view.mark(c.id, list(unkeep), False)
    except CleanedError as e:
        st.session_state[ERROR] = str(e)


def _rel(t, path: str) -> str:
    return cleaned.rel_path(t.ds.root, path)


def _state(t, keeps: set, rel: str) -> tuple[bool, str | None, bool]:
    c = t.cleaning
    return (c is not None and rel in c.exclude, c.relabel.get(rel) if c else None, rel in keeps)


def widget_key(key: str) -> str:
    """The decision control's widget key for a finding (``label|<path>``, ``outlier|<path>``,
    ``leaks|<a>|<b>``, ``duplicates|<a>|<b>``): short, and safe whatever the file names."""
    return "_clean." + hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _control(key: str, options: list[str], current: str | None, on_pick) -> None:
    wkey = widget_key(key)
    st.session_state[wkey] = current  # a view of the store: drawn as decided, whatever was clicked before
    st.segmented_control("Decision", options, key=wkey, label_visibility="collapsed",
                         on_change=lambda: on_pick(st.session_state[wkey]))


def _more(kind: str, n: int) -> int:
    shown = st.session_state.setdefault(f"_clean_shown.{kind}", PAGE)
    return min(shown, n)


def _more_button(kind: str, shown: int, n: int) -> None:
    if shown < n and st.button(f"Show {min(PAGE, n - shown)} more", key=f"_clean_more.{kind}"):
        st.session_state[f"_clean_shown.{kind}"] = shown + PAGE
        st.rerun()


def label_issues(t, rows: list[dict], keeps: set) -> None:
    if not rows:
        st.success("No photo's label disagrees with what the other photos of the dataset suggest.")
        return
    sure = [r for r in rows if r["score"] <= CONFIDENT]
    c1, c2 = st.columns(2)
    if sure and c1.button(f"Relabel the {len(sure)} clear cases to their suggestion (at least {1 - CONFIDENT:.0%} "
                          "for another class)", key="_clean_bulk_relabel"):
        _decide(t, {_rel(t, r["path"]): False for r in sure}, {_rel(t, r["path"]): r["suggested"] for r in sure},
                f"relabelled {len(sure)} photos to their suggestion")
        st.rerun()
    if c2.button(f"Exclude all {len(rows)} flagged photos", key="_clean_bulk_exclude_labels"):
        _decide(t, {_rel(t, r["path"]): True for r in rows}, {}, f"excluded {len(rows)} flagged photos")
        st.rerun()
    st.caption("Each photo's class as a linear head trained on the *other* photos sees it (5-fold cross-validation "
               "on ImageNet features): least confident in the given class first. **→ class** relabels it, **exclude** "
               "leaves it out, **keep** marks it right as it is; click a chosen button again to take it back.")
    shown = _more("labels", len(rows))
    cols = st.columns(4)
    for k, r in enumerate(rows[:shown]):
        rel = _rel(t, r["path"])
        out, label, kept = _state(t, keeps, rel)
        to = f"→ {r['suggested']}"
        current = "exclude" if out else to if label == r["suggested"] else "keep" if kept or label else None

        def pick(choice, rel=rel, r=r, to=to):
            if choice == to:
                _decide(t, {rel: False}, {rel: r["suggested"]}, f"relabelled {rel} to {r['suggested']}", unkeep=[rel])
            elif choice == "exclude":
                _decide(t, {rel: True}, {}, f"excluded {rel}", unkeep=[rel])
            elif choice == "keep":
                _decide(t, {rel: False}, {rel: None}, f"kept {rel}", keep=[rel])
            else:
                _decide(t, {rel: False}, {rel: None}, f"took back the decision on {rel}", unkeep=[rel])
        with cols[k % 4]:
            _show(r["path"])
            st.caption(f"**{r['split']}** · filed as **{r['given']}**, looks like **{r['suggested']}** "
                       f"({r['given']}: {r['score']:.0%})")
            _control(f"label|{rel}", [to, "exclude", "keep"], current, pick)
    _more_button("labels", shown, len(rows))


def pairs(t, rows: list[dict], keeps: set, kind: str) -> None:
    leak = kind == "leaks"
    if not rows:
        st.success("No photo is in both train and val." if leak else "No photo appears twice within a split.")
        return
    second = "the val copy" if leak else "the second copy"
    if st.button(f"Drop {second} of every {'leak' if leak else 'duplicate'} ({len(rows)})", key=f"_clean_bulk_{kind}"):
        _decide(t, {_rel(t, r["other"]): True for r in rows}, {}, f"dropped {second} of {len(rows)} pairs")
        st.rerun()
    st.caption("A **leak** is a training photo whose copy (resized, re-encoded) sits in val: the model is scored on a "
               "photo it trained on, so the validation accuracy is optimistic. Drop the val copy." if leak else
               "The same photo twice in one split weighs it double. Drop one copy.")
    options = ["drop val copy", "drop train photo", "keep both"] if leak else ["drop second", "drop first", "keep both"]
    shown = _more(kind, len(rows))
    for r in rows[:shown]:
        a, b = _rel(t, r["path"]), _rel(t, r["other"])
        out_a, out_b = _state(t, keeps, a)[0], _state(t, keeps, b)[0]
        current = options[0] if out_b else options[1] if out_a else options[2] if b in keeps else None

        def pick(choice, a=a, b=b):
            if choice == options[0]:
                _decide(t, {b: True, a: False}, {}, f"dropped {b}", unkeep=[b])
            elif choice == options[1]:
                _decide(t, {a: True, b: False}, {}, f"dropped {a}", unkeep=[b])
            elif choice == options[2]:
                _decide(t, {a: False, b: False}, {}, f"kept {a} and {b}", keep=[b])
            else:
                _decide(t, {a: False, b: False}, {}, f"took back the decision on {b}", unkeep=[b])
        c1, c2, c3 = st.columns([1, 1, 2])  # a pair side by side, small: the decision is about both
        with c1:
            _show(r["path"], PAIR_WIDTH)
            st.caption(_named(r["split"], a))
        with c2:
            _show(r["other"], PAIR_WIDTH)
            st.caption(_named(r["other_split"], b))
        with c3:
            how = {"identical bytes": "identical files", "features": "the network sees the same photo",
                   "pixels": "the same picture at another size"}[r["how"]]
            st.markdown(f"Similarity **{r['similarity']:.3f}** (features), thumbnails {r['pixels']:.3f}: {how}.")
            _control(f"{kind}|{a}|{b}", options, current, pick)
    _more_button(kind, shown, len(rows))


def _named(split: str, rel: str) -> str:
    """"**val** · bees/x.jpg": the split once, even where it is the path's first folder."""
    return f"**{split}** · {rel.removeprefix(split + '/')}"


def outliers(t, rows: list[dict], keeps: set) -> None:
    if not rows:
        st.success("Every photo is close to some class.")
        return
    if st.button(f"Exclude every outlier ({len(rows)})", key="_clean_bulk_outliers"):
        _decide(t, {_rel(t, r["path"]): True for r in rows}, {}, f"excluded {len(rows)} outliers")
        st.rerun()
    st.caption("Photos far from every class (a screenshot, a placeholder, another kind of picture): their similarity "
               "to the nearest class lies 5 robust standard deviations or more below the typical photo's.")
    shown = _more("outliers", len(rows))
    cols = st.columns(4)
    for k, r in enumerate(rows[:shown]):
        rel = _rel(t, r["path"])
        out, label, kept = _state(t, keeps, rel)
        current = "exclude" if out else "keep" if kept else None

        def pick(choice, rel=rel):
            if choice == "exclude":
                _decide(t, {rel: True}, {}, f"excluded {rel}", unkeep=[rel])
            elif choice == "keep":
                _decide(t, {rel: False}, {}, f"kept {rel}", keep=[rel])
            else:
                _decide(t, {rel: False}, {}, f"took back the decision on {rel}", unkeep=[rel])
        with cols[k % 4]:
            _show(r["path"])
            st.caption(f"**{r['split']}** · nearest class **{r['nearest']}** at {r['similarity']:.2f} · "
                       f"{r['score']:.1f} deviations out")
            _control(f"outlier|{rel}", ["exclude", "keep"], current, pick)
    _more_button("outliers", shown, len(rows))


def review_keys(t, report) -> set[str]:
    """One key per thing to look at: a flagged photo, or a pair by its second photo."""
    keys = {_rel(t, r["path"]) for r in report.label_issues + report.outliers}
    return keys | {_rel(t, r["other"]) for r in report.leaks + report.near_duplicates}


def decided(t, report, keeps: set) -> int:
    """How many of ``review_keys`` have a decision (kept, excluded, relabelled, or a pair's photo dropped)."""
    c = t.cleaning
    touched = set(c.exclude) | set(c.relabel) if c else set()
    n = 0
    for key in review_keys(t, report):
        pair = [r for r in report.leaks + report.near_duplicates if _rel(t, r["other"]) == key]
        n += key in keeps or key in touched or any(_rel(t, r["path"]) in touched for r in pair)
    return n
