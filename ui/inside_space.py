"""The Inside page's feature space: each body's pooled features as a 2-D map, with how
separable the classes already are (k-NN and linear-probe accuracy) before any head.

Features come from the shared cache with a frozen run's keys (``core/inside/features.py``),
so nothing runs unasked: when a body's features are missing the section says how many
photos would go through which body and about how long that takes, and waits for a button.
With them cached it only measures (a second or two) and draws.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.inside import separability
from core.inside.features import Body, extract, is_cached
from core.training.feature_cache import default_cache

from . import common

METHOD_HELP = {
    "knn": "Each validation photo takes the majority class of its 5 nearest training photos in this feature space "
           "(cosine similarity). No training at all: the feature space's own answer.",
    "probe": "A logistic regression fitted on the training photos' features (standardised, L2 penalty 0.01, "
             "L-BFGS to convergence), scored on the validation photos: the best a frozen run's linear head can do.",
}
CAPTIONS = {
    "imagenet": "ImageNet body, never trained on these photos: if the classes already form separate clouds here, a "
                "frozen body plus a new head is all transfer needs.",
    "random": "The same architecture at random init: a body that has learnt nothing, so any separation here comes "
              "from the architecture alone; compare its numbers with ImageNet's.",
    "run": "This run's body after its training: a fine-tuned body pulls the classes further apart; a frozen one is "
           "the ImageNet body, point for point.",
    "file": "The body of the chosen weights file.",
}


@st.cache_data(show_spinner="Making thumbnails…", max_entries=8)
def thumbnails(paths: tuple[str, ...], size: int = 96) -> list[str]:
    """Small JPEG data URLs for the hover labels (decoded at a reduced JPEG scale)."""
    from core.data.images import load_rgb
    out = []
    for p in paths:
        try:
            img = load_rgb(p, draft_size=size)
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=70)
            out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
        except Exception:  # noqa: BLE001 - a photo changed since the scan: no thumbnail, still a point
            out.append("")
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def _measured(keys: tuple[str, ...], _feats) -> dict:
    """The numbers and the map of one body's features; keyed by the cache keys, which change
    whenever the features would."""
    m = separability.measure(_feats)
    return {**m, "pca": m["pca"].tolist()}


def learn(body: Body, feats, n_images: int, device) -> None:
    """Teach the queue's speed book what this extraction measured (as a training run's
    feature pass does), so the next estimate here and on the Train page is this machine's:
    the prior, made for an idle 2-core CPU, said 3 s where a busy one took 27."""
    from core.jobs.queue import MIN_IMAGES_TO_LEARN
    from ui.jobs import training_queue
    if feats.computed < 2 or n_images < MIN_IMAGES_TO_LEARN:
        return  # partly cached, or too few photos: mostly fixed cost, a misleading rate
    book = training_queue().book
    if feats.decode_seconds > 0.5:
        book.record(body.arch, device.type, "decode", n_images / feats.decode_seconds)
    if feats.body_seconds > 0.5:
        book.record(body.arch, device.type, "forward", n_images / feats.body_seconds)


def estimate_seconds(bodies: list[Body], n_images: int, device) -> float:
    """Decoding plus the body's forward passes, from the queue's measured rates."""
    from ui.jobs import training_queue
    book = training_queue().book
    return sum(book.phase_seconds(b.arch, device.type, "decode", n_images)
               + book.phase_seconds(b.arch, device.type, "features", n_images) for b in bodies)


def section(ds, bodies: list[Body], device, run: dict | None) -> None:
    st.header("1 · Feature space: are the classes apart before training?", anchor="feature-space")
    if run is not None:
        _note_run_photos(ds, run)
    cfg, cache = common.train_config(), default_cache()
    missing = [b for b in bodies if not is_cached(b, ds.train, ds.val, cfg, device, cache)]
    n = len(ds.train) + len(ds.val)
    if missing:
        slot = st.empty()  # the cost and the button, gone once the features exist
        with slot.container():
            seconds = estimate_seconds(missing, n, device)
            from ui.jobs import training_queue
            busy = any(j.status == "running" for j in list(training_queue().jobs.values()))
            st.info(f"The features of {n} photos ({len(ds.train)} training, {len(ds.val)} validation) are not computed "
                    f"yet for: **{', '.join(b.label for b in missing)}**. Running them through "
                    f"{'that body' if len(missing) == 1 else 'those bodies'} takes about **{duration(seconds)}** here "
                    f"({common.device_name()}); a frozen run on the Train page then reuses them, and so does this page."
                    + (" A training job is running on this server now: expect several times longer." if busy else ""),
                    icon=":material/hourglass_top:")
            if not st.button("Compute the features", icon=":material/play_arrow:", key="inside_extract"):
                return
            bar = st.progress(0.0, text="Starting…")
            for i, body in enumerate(missing):
                def show(p, i=i, body=body):
                    frac = (i + p["done"] / max(p["total"], 1)) / len(missing)
                    what = "reading photos" if p.get("phase") == "decode" else "running the body"
                    bar.progress(min(frac, 1.0), text=f"{body.label}: {what} ({p['done']}/{p['total']})")
                learn(body, extract(body, ds.train, ds.val, cfg, device, cache, show), n, device)
        slot.empty()
    _draw(ds, bodies, cfg, device, cache)


def _draw(ds, bodies, cfg, device, cache) -> None:
    from core.inside.features import cache_keys
    samples = ds.train + ds.val
    names = [str(Path(p).relative_to(ds.root)) if Path(p).is_relative_to(ds.root) else Path(p).name for p, _ in samples]
    thumbs = thumbnails(tuple(p for p, _ in samples))
    split = ["train"] * len(ds.train) + ["val"] * len(ds.val)
    st.caption("Each dot is one photo, placed by the two directions along which the body's pooled features vary most "
               "(PCA: a straight line on the map is one a linear head could draw); colour is the class, circles are "
               "training photos, triangles validation ones. Hover a dot for its photo. Training dots are the "
               "augmented crop a frozen run trains on, validation dots the centre crop it is scored on.")
    cols = st.columns(len(bodies))
    for col, body in zip(cols, bodies):
        feats = extract(body, ds.train, ds.val, cfg, device, cache)  # from the cache: no image decoded
        m = _measured(tuple(cache_keys(body, ds.train, ds.val, cfg, device)), feats)
        with col:
            st.subheader(body.label)
            a, b = st.columns(2)
            a.metric("k-NN accuracy (k=5)", f"{m['knn_acc']:.1%}", help=METHOD_HELP["knn"])
            b.metric("Linear probe", f"{m['linear_probe_acc']:.1%}", help=METHOD_HELP["probe"])
            frame = pd.DataFrame({"PC 1": [c[0] for c in m["pca"]], "PC 2": [c[1] for c in m["pca"]],
                                  "class": [ds.classes[y] for _, y in samples], "split": split, "photo": names,
                                  "image": thumbs})
            st.altair_chart(_map(frame, m["pca_variance"]), width="stretch")
            st.caption(CAPTIONS.get(body.kind, "") + f" The two axes hold {sum(m['pca_variance']):.0%} of the variance "
                       f"of {m['dims']} features.")


def _map(frame: pd.DataFrame, variance: list[float]) -> alt.Chart:
    # Altair for this chart alone: its tooltips show an "image" field as a picture
    # (vega-tooltip), which Plotly's hover labels cannot.
    return alt.Chart(frame).mark_point(filled=True, size=45, opacity=0.75).encode(
        # No zero, a margin in pixels: PCA coordinates are centred, and a dot on the frame was cut in half.
        x=alt.X("PC 1:Q", title=f"PC 1 ({variance[0]:.0%} of the variance)", axis=alt.Axis(labels=False, ticks=False),
                scale=alt.Scale(zero=False, nice=False, padding=12)),
        y=alt.Y("PC 2:Q", title=f"PC 2 ({variance[1]:.0%})", axis=alt.Axis(labels=False, ticks=False),
                scale=alt.Scale(zero=False, nice=False, padding=12)),
        color=alt.Color("class:N", legend=alt.Legend(orient="bottom", title=None), scale=alt.Scale(scheme="tableau10")),
        shape=alt.Shape("split:N", scale=alt.Scale(domain=["train", "val"], range=["circle", "triangle-up"]),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["photo:N", "class:N", "split:N", "image:N"],
    ).properties(height=340)


def _note_run_photos(ds, run: dict) -> None:
    """Where the run's own photos are, and whether any validation photo here trained it."""
    split = run.get("split") or {}
    if run["config"].get("imported") or not split.get("root"):
        st.info(f"**{run['name']}** was imported: its own photos stayed on the machine it was trained on, so its body "
                "is shown on this dataset's photos.", icon=":material/info:")
        return
    if Path(split["root"]) == Path(ds.root):
        trained = {str(Path(split["root"]) / rel) for rel, _ in split.get("train", [])}
        seen = sum(str(p) in trained for p, _ in ds.val)
        if seen:
            st.warning(f"{seen} of these {len(ds.val)} validation photos were training photos of **{run['name']}** "
                       "(another split of the same folder): its numbers above are flattering.", icon=":material/warning:")


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
