"""The Inside page's other pictures: first-layer filters, one photo's feature maps shallow
to deep (with Grad-CAM at the end), and what fine-tuning changed per stage.

Filters and feature maps are cheap (weights only; one photo through two or three bodies)
and draw at once.  The per-stage weight change is weights only too; its similarity
column (linear CKA) runs the validation photos through the run and its start, so like
the feature space it shows its cost and waits for a button unless cached.
"""
from __future__ import annotations

import hashlib
import io

import plotly.graph_objects as go
import streamlit as st

from core.inside import change, feature_maps, filters
from core.inside.features import Body
from core.training.feature_cache import default_cache

from . import common, schedule_view
from .inside_space import duration, estimate_seconds


@st.cache_resource(show_spinner="Building the model…", max_entries=6)
def body(kind: str, arch: str, num_classes: int, seed: int) -> Body:
    """An ImageNet or random-init body, shared by every tab and never changed."""
    from core.device import pick_device
    from core.inside.features import build_body
    return build_body(kind, arch, num_classes, pick_device("auto"), seed=seed)


@st.cache_resource(show_spinner="Loading the run's model…", max_entries=4)
def run_body(run_dir: str, mtime: float) -> Body:
    from core.device import pick_device
    from core.inside.features import run_body as load
    from core.runs.store import load_run
    return load(load_run(run_dir), pick_device("auto"))


def first_layer_weight(run: dict, path: str):
    """The first convolution (module ``path``) of a run's saved weights, read without
    building its model."""
    from core.runs.store import load_weights
    return load_weights(run["dir"])[f"{path}.weight"].float()


def run_mtime(run: dict) -> float:
    from pathlib import Path
    return Path(run["dir"], "summary.json").stat().st_mtime


def filters_section(arch: str, imagenet: Body | None, random: Body, run: dict | None, visible: list[dict]) -> None:
    st.header("2 · First-layer filters: what the network looks for first", anchor="filters")
    columns: list[tuple[str, object, str]] = []
    if imagenet is not None:
        columns.append(("ImageNet", filters.first_conv(imagenet.model)[1], "Learnt from 1.2 million photos."))
    else:
        columns.append(("ImageNet", None, f"No ImageNet weights for {arch} on this machine."))
    path, random_weight = filters.first_conv(random.model)
    columns.append(("random init", random_weight, "Where a scratch run starts."))
    same = [r for r in visible if r["config"].get("arch") == arch]
    tuned = run if run is not None and _started_from_imagenet(run) and run["config"].get("freeze") != "backbone" else \
        next((r for r in same if _started_from_imagenet(r) and r["config"].get("freeze") != "backbone"), None)
    scratch = run if run is not None and run["config"].get("weights_loaded") == "none" else \
        next((r for r in same if r["config"].get("weights_loaded") == "none"), None)
    columns.append(("fine-tuned run", first_layer_weight(tuned, path) if tuned else None,
                    f"**{tuned['name']}**." if tuned else "None of your runs of this architecture fine-tuned its body "
                    "(Model page: *Fine-tune everything*)."))
    columns.append(("scratch run", first_layer_weight(scratch, path) if scratch else None,
                    f"**{scratch['name']}**." if scratch else "None of your runs of this architecture trained from "
                    "random init (Model page: *Random init (train from scratch)*)."))
    st.caption("Each tile is one kernel of the first convolution, its three colour channels as an RGB picture (grey is "
               "zero). **Look for** oriented edges, bars and colour-opponent blobs (red against green, blue against "
               "yellow) in the trained ones, noise at random init: the first layer finds the same edges in any photo, "
               "which is why it can stay frozen. *Smoothness* is the correlation of neighbouring weights (0 for noise).")
    # Two by two: a first layer of 3x3 kernels (MobileNetV2) needs the width to be readable.
    cols = [c for _ in range(0, len(columns), 2) for c in st.columns(2)]
    for col, (title, weight, note) in zip(cols, columns):
        with col:
            st.subheader(title)
            if weight is None:
                st.caption(note)
                continue
            facts = filters.describe(weight)
            st.image(filters.tiles(weight), width="stretch")
            smooth = f"; smoothness {facts['smoothness']:.2f}" if facts["smoothness"] is not None else ""
            moved = ""
            if imagenet is not None and title == "fine-tuned run":
                base = filters.first_conv(imagenet.model)[1]
                moved = f"; moved {float((weight - base).norm() / base.norm()):.2%} from ImageNet"
                if tuned is not None and schedule_view.head_only_best(tuned):
                    # 0.00% under "fine-tuned run" read as a bug in the walk: say why the body is its start.
                    moved += " (its saved weights are its best epoch, a head-only one)"
            st.caption(f"{note} {facts['filters']} kernels of {facts['kernel'][0]}×{facts['kernel'][1]}{smooth}{moved}.")


def _started_from_imagenet(run: dict) -> bool:
    return str(run["config"].get("weights_loaded", "")).startswith("imagenet")


@st.cache_data(show_spinner=False, max_entries=24)
def _strips(_body: Body, body_id: str, image_digest: str, _image) -> list[tuple[str, bytes]]:
    from core.data.transforms import eval_transform
    x = eval_transform(_body.spec)(_image).unsqueeze(0)
    out = []
    for name, fmap in feature_maps.stage_maps(_body.model, _body.arch, x):
        buf = io.BytesIO()
        feature_maps.strip(fmap, 4, 72).save(buf, "PNG")
        out.append((name, buf.getvalue()))
    return out


def maps_section(bodies: list[Body], image, image_name: str, run: dict | None) -> None:
    st.caption(f"**{image_name}** through each body, input at the top, deepest stage at the bottom: per stage the "
               "four channels this photo drives hardest (dark = low, yellow = high), each map smaller than the one "
               "before. **Notice** how ImageNet's channels differ from one another (each is its own detector: edges "
               "and textures first, parts of the object deeper down), while random init's repeat the same "
               "silhouette and turn to noise in the deep stages.")
    digest = hashlib.blake2b(image.tobytes(), digest_size=12).hexdigest()
    strips = [dict(_strips(b, f"{b.arch}|{b.weights}|{b.label}|{id(b.model)}", digest, image)) for b in bodies]
    cols = st.columns([1] + [3] * len(bodies))
    cols[0].markdown("**stage**")
    for c, b in zip(cols[1:], bodies):
        c.markdown(f"**{b.label}**")
    from torchvision.transforms import v2 as T
    cols = st.columns([1] + [3] * len(bodies))
    cols[0].caption("input")
    for c, b in zip(cols[1:], bodies):  # the centre crop each body's transforms make of the photo
        c.image(T.CenterCrop(b.spec.crop_size)(T.Resize(b.spec.resize_size)(image)), width=96)
    for stage in [s for s in strips[0]]:
        cols = st.columns([1] + [3] * len(bodies))
        cols[0].caption(stage)
        for c, s in zip(cols[1:], strips):
            if stage in s:
                c.image(s[stage], width="stretch")
    if run is None:
        st.caption("Choose a trained run at the top of the page to end with its Grad-CAM.")
        return
    from core.serving.predict import explain
    predictor = common.predictor_for(run["dir"])
    top = predictor.predict(image, 1)[0]
    heat = explain(predictor, image, predictor.classes.index(top["label"]))
    if heat is None:
        st.caption("Grad-CAM is available for convolutional networks only.")
        return
    a, b = st.columns([1, 2])
    a.image(heat, caption=f"Grad-CAM of {run['name']}: where it sees “{top['label']}” ({top['prob']:.0%})", width="stretch")
    b.caption("At the end of the body, Grad-CAM weighs the deepest stage's channels by how much they raise the "
              "predicted class: the warm region is what the decision rests on. **Notice** whether it is the object "
              "or the background.")


def change_figure(rows: list[dict], title: str) -> go.Figure:
    """Weight change as bars on top; CKA, once measured, as a line in a panel of its own
    below (drawn over the bars, its points hid their labels)."""
    from plotly.subplots import make_subplots
    stages = [r["stage"] for r in rows]
    pct = [100 * (r["rel_change"] or 0) for r in rows]  # fine-tuning moves weights by fractions of a percent
    top = max(pct) * 1.25 if max(pct) > 0 else 1.0  # room above the tallest bar for its label
    measured = any(r.get("cka") is not None for r in rows)
    fig = make_subplots(rows=2 if measured else 1, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.65, 0.35] if measured else None)
    fig.add_trace(go.Bar(x=stages, y=pct, name="relative weight change", marker_color="#d62728",
                         text=[f"{v:.2g}%" for v in pct], textposition="outside", cliponaxis=False), row=1, col=1)
    fig.update_yaxes(title_text="‖W − W_start‖ / ‖W_start‖", ticksuffix="%", tickformat=".2~g", range=[0, top],
                     row=1, col=1)
    if measured:
        fig.add_trace(go.Scatter(x=stages, y=[r.get("cka") for r in rows], name="similarity before/after (linear CKA)",
                                 mode="lines+markers+text", text=[f"{r['cka']:.2f}" if r.get("cka") is not None else ""
                                                                  for r in rows],
                                 textposition="bottom center", line={"color": "#1f77b4"}), row=2, col=1)
        fig.update_yaxes(title_text="CKA", range=[0, 1.08], tickvals=[0, 0.5, 1], row=2, col=1)
    fig.update_xaxes(title_text="stage (input → head)", row=2 if measured else 1, col=1)
    fig.update_layout(title=title, height=460 if measured else 340, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def change_section(ds, run: dict | None, device) -> None:
    st.header("4 · What fine-tuning changed", anchor="what-changed")
    if run is None:
        st.info("Choose a trained run at the top of the page to see, stage by stage, how far its training moved it.")
        return
    start, what = change.start_of(run, device)
    if start is None:
        st.info(f"**{run['name']}** cannot be compared with its start here: {what}.")
        return
    after = run_body(run["dir"], run_mtime(run))
    rows = change.weight_change(after.model, start.model, after.arch)
    cache = default_cache()
    photos = ds.val
    frozen = all((r["rel_change"] or 0) == 0 for r in rows)  # nothing moved: no similarity to measure
    if frozen:
        pass
    elif change.stage_outputs_cached(after, photos, after.spec, device, cache) and \
            change.stage_outputs_cached(start, photos, after.spec, device, cache):
        rows = change.change_table(after, start, photos, device, cache)
    else:
        slot = st.empty()  # the button, gone once measured
        with slot.container():
            clicked = st.button(f"Measure the similarity of each stage on {len(photos)} validation photos (two passes "
                                f"through the body, about {duration(2 * estimate_seconds([after], len(photos), device))})",
                                key="inside_cka", icon=":material/play_arrow:")
            if clicked:
                bar = st.progress(0.0, text="Running the photos through the run and its start…")
                rows = change.change_table(after, start, photos, device, cache, lambda p: bar.progress(
                    p["done"] / max(p["total"], 1), text=f"batch {p['done']}/{p['total']}"))
        if clicked:
            slot.empty()
    st.plotly_chart(change_figure(rows, f"{run['name']} against {what}"), width="stretch")
    kept_head = schedule_view.head_only_best(run)
    if kept_head:  # the saved body is then its start, whatever the unfrozen epochs did
        st.info(kept_head + " So the body shown here is where it started.", icon=":material/info:")
    st.caption("Red bars: how far training moved each stage's weights, as a share of where they started (the new head "
               "has no start and is left out). Blue line below, once measured: how alike each stage's outputs are before "
               "and after on this dataset's validation photos (linear CKA, 1 = the same up to rotation and scale). "
               + ("**The saved body is exactly its start**" + (" (its best epoch trained the head alone)" if kept_head
                  else ": this run kept its body frozen") + ". Choose a run whose best epoch fine-tuned the body to see "
                  "the pattern." if frozen else "**Notice** whether the stages near the input moved less than those "
                  "near the head: that is the picture behind freezing the low layers."))
    if run["config"].get("imported") or not (run.get("split") or {}).get("root"):
        st.caption("This run was imported: its own validation photos stayed on the machine it was trained on, so the "
                   "similarity is measured on this dataset's.")
    st.dataframe([{"stage": r["stage"], "parameters": r["params"],
                   "relative change": None if r["rel_change"] is None else round(100 * r["rel_change"], 3),
                   "CKA before/after": None if r.get("cka") is None else round(r["cka"], 4)} for r in rows],
                 hide_index=True, width="stretch",
                 column_config={"relative change": st.column_config.NumberColumn(format="%.3f%%"),
                                "CKA before/after": st.column_config.NumberColumn(format="%.4f")})
