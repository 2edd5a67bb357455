"""Compare's word on cleaning and validation sets (``core/audit/valsets.py``).

Shown when a chosen run trained on a cleaned dataset, or when the chosen runs were
validated on different photos: which cleaning each run used, which validation set
(sets are lettered A, B, …), and, a button away, every run's accuracy on the same photos:
the newest cleaned run's validation set, else the newest run's, among the visitor's own
(a classmate's published run may be scored on the visitor's photos, never the other way).
"""
from __future__ import annotations

import streamlit as st

from core.audit import valsets


@st.cache_data(show_spinner=False, max_entries=64)
def _score(run_dir: str, mtime: float, set_digest: str, _photos: list) -> dict:
    """``mtime`` and ``set_digest`` are the key: the run's weights and the photos scored on."""
    return valsets.evaluate_on(run_dir, _photos)


def _mtime(run_dir: str) -> float:
    from pathlib import Path
    return Path(run_dir, "summary.json").stat().st_mtime


def cleaning_text(config: dict) -> str:
    rec = config.get("cleaned")
    if not isinstance(rec, dict):
        return "none"
    return (f"{rec.get('title', rec.get('id'))} (version {rec.get('version')}: {rec.get('excluded', 0)} excluded, "
            f"{rec.get('relabelled', 0)} relabelled)")


def section(chosen: list[str], loaded: dict, by_dir: dict, viewer) -> None:
    photos = {d: valsets.val_photos(loaded[d]) for d in chosen}
    digests = {d: valsets.digest(p) for d, p in photos.items() if p is not None}
    letters = {dg: chr(ord("A") + k) for k, dg in enumerate(dict.fromkeys(digests.values()))}
    cleaned_runs = [d for d in chosen if isinstance(loaded[d]["config"].get("cleaned"), dict)]
    if len(letters) <= 1 and not cleaned_runs:
        return
    st.subheader("Cleaning and validation photos")
    mine = [d for d in chosen if d in digests and viewer.can_change(by_dir[d]["owner"])]
    ref = next((d for d in mine if d in cleaned_runs), mine[0] if mine else None)
    if len(letters) > 1:
        st.warning(f"These runs were validated on **{len(letters)} different sets of photos**, so their best "
                   "accuracies are not comparable: a val set with copies of training photos flatters, one without "
                   "its hardest photos too. Score them on the same photos below.", icon=":material/rule:")
    rows = []
    for d in chosen:
        row = {"run": by_dir[d]["name"], "cleaning": cleaning_text(loaded[d]["config"]),
               "validation set": f"{letters[digests[d]]} ({len(photos[d])} photos)" if d in digests else
               "not on this machine", "best val acc": round(100 * loaded[d]["summary"]["best_val_acc"], 1)}
        if ref is not None and d in digests:
            row["vs the reference set"] = "the reference" if d == ref else \
                valsets.describe(valsets.difference(photos[d], photos[ref]))
        rows.append(row)
    key = f"_clean_compare.{digests.get(ref)}.{'|'.join(chosen)}"
    scores = st.session_state.get(key)
    if ref is not None and len(letters) > 1:
        ref_set = photos[ref]
        ask = st.empty()  # the button leaves once pressed
        if scores is None and ask.button(f"Score every run on set {letters[digests[ref]]}, the validation photos of "
                                         f"{by_dir[ref]['name']} ({len(ref_set)} photos)", key="clean_compare_score",
                                         icon=":material/balance:"):
            ask.empty()
            classes = set(loaded[ref]["classes"])
            scores = {}
            with st.spinner("Classifying the photos with each run…"):
                for d in chosen:
                    if set(loaded[d]["classes"]) == classes:
                        scores[d] = _score(d, _mtime(d), digests[ref], ref_set)["accuracy"]
            st.session_state[key] = scores
    for d, row in zip(chosen, rows):
        if scores is not None:
            row[f"acc on set {letters[digests[ref]]}"] = round(100 * scores[d], 1) if d in scores else None
    pct = st.column_config.NumberColumn(format="%.1f%%")
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"best val acc": pct, **({f"acc on set {letters[digests[ref]]}": pct} if scores else {})})
    if ref is None and len(letters) > 1:
        st.caption("None of these runs is yours, so there is no validation set of yours to score them on.")
    elif scores is not None:
        st.caption(f"Set {letters[digests[ref]]} is {by_dir[ref]['name']}'s"
                   + (" (trained on a cleaned dataset)." if ref in cleaned_runs else ".")
                   + " A run that does not know a class of these photos is left blank.")
