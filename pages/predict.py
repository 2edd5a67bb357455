"""Predict: classify uploaded photos or a camera shot with a trained run, with Grad-CAM."""
import io

import plotly.graph_objects as go
import streamlit as st

from core.data.images import ImageReadError, load_rgb
from core.errors import TransferLabError
from core.serving import batch_predict
from core.serving.predict import explain
from ui import common, export_view, identity
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py
CARDS = 12  # photos shown one by one (with Grad-CAM); more go into one table

st.title("Predict")
all_runs = common.require_runs("No trained run yet. Train one on the Train page, then come back with your photos.")
by_dir = {r["dir"]: r for r in all_runs}
fresh = common.new_runs_of_this_tab(by_dir, "_predict_seen")
if fresh or st.session_state[S.PREDICT_RUN] not in by_dir:
    # This tab's newest run since the last visit (the visitor may have several tabs), one
    # that ran to the end before one that was stopped part-way; else the one chosen
    # before; else the most accurate.
    finished = [d for d in fresh if not by_dir[d]["summary"].get("stopped")]
    S.put(S.PREDICT_RUN, (finished or fresh)[0] if fresh else
          max(all_runs, key=lambda r: r["summary"].get("best_val_acc") or 0)["dir"])
st.selectbox("Model (a finished run)", list(by_dir), format_func=lambda d: common.run_label(by_dir[d]), **S.bind(S.PREDICT_RUN))
run_dir = st.session_state[S.PREDICT_RUN]
predictor = common.predictor_for(run_dir)
st.caption(f"Classes: {', '.join(predictor.classes)}")
owns = identity.viewer().can_change(by_dir[run_dir]["owner"])  # a run shared with the class stays its owner's to export
st.caption(f"Runs on **{predictor.backend}**." + ("" if predictor.session or not owns else
           " An ONNX export of this run (below) moves predictions onto onnxruntime, "
           "several times faster on a CPU, once it has passed its check."))
if owns:
    with st.expander("Take this model away: ONNX, TorchScript, safetensors or a run bundle", icon=":material/output:"):
        export_view.section(run_dir, by_dir[run_dir]["name"], key="predict", heading=False)

c1, c2 = st.columns([3, 1])
uploads = c1.file_uploader("Photos, or a .zip of photos", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "zip"],
                           accept_multiple_files=True, help=f"Up to {CARDS} photos are shown one by one with Grad-CAM; "
                                                         "more, or a .zip, are classified in one go into a table and a CSV.")
topk = c2.number_input("Top-k", 1, max(1, len(predictor.classes)), min(3, len(predictor.classes)))
cam_on = c2.checkbox("Grad-CAM heatmap", value=True)
shot = st.camera_input("…or take a photo") if st.toggle("Use the camera") else None
files = list(uploads or []) + ([shot] if shot is not None else [])
if not files:
    st.info("Upload one or more photos (or take one) to classify them.")
    st.stop()


def classify_all(files) -> list[dict]:
    """Every photo and every photo inside the zips, classified in batches, with a progress bar;
    kept for this set of files, run and top-k (a download click reruns the page)."""
    key = (run_dir, predictor.backend, int(topk), tuple(f.file_id for f in files))
    done = st.session_state.get("_batch")
    if done and done[0] == key:
        return done[1]
    items = []
    for f in files:
        if f.name.lower().endswith(".zip"):
            try:
                items += [(f"{f.name}/{name}", blob) for name, blob in batch_predict.photos_in_zip(f.getvalue(), f.name)]
            except TransferLabError as e:
                st.error(str(e), icon=":material/block:")
        else:
            items.append((f.name, f.getvalue()))
    bar = st.progress(0.0, text=f"Classifying {len(items)} photos…")
    rows = list(batch_predict.classify(predictor, items, int(topk), total=len(items), progress=lambda n, total:
                                       bar.progress(n / max(total, 1), text=f"Classified {n} of {total}")))
    bar.empty()
    st.session_state["_batch"] = (key, rows)
    return rows


if any(f.name.lower().endswith(".zip") for f in files) or len(files) > CARDS:
    rows = classify_all(files)
    good = [r for r in rows if "prediction" in r]
    counts = {c: sum(r["prediction"] == c for r in good) for c in predictor.classes}
    st.success(f"**{len(good)} photos classified**" + (f", {len(rows) - len(good)} could not be read" if len(good) < len(rows) else "")
               + ": " + ", ".join(f"{c} {n}" for c, n in counts.items() if n))
    st.dataframe([{k: v for k, v in r.items() if k != "topk"} for r in rows], hide_index=True, width="stretch", column_order=["file", "prediction", "confidence", "top", "error"],
                 column_config={"confidence": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)})
    st.download_button("Download the predictions (CSV)", batch_predict.to_csv(rows), file_name="predictions.csv",
                       mime="text/csv", icon=":material/download:")
    st.stop()

for f in files:
    st.divider()
    try:
        image = load_rgb(io.BytesIO(f.getvalue()))
    except ImageReadError as e:
        st.error(f"**{f.name}**: cannot be classified ({e}).")
        continue
    top = predictor.predict(image, int(topk))
    cols = st.columns([1, 1, 1.3])
    cols[0].image(image, caption=f.name, width="stretch")
    if cam_on:
        heat = explain(predictor, image, predictor.classes.index(top[0]["label"]))
        if heat is not None:
            cols[1].image(heat, caption=f"Grad-CAM: where it sees “{top[0]['label']}”", width="stretch")
        else:
            cols[1].caption("Grad-CAM is available for convolutional networks only.")
    cols[2].markdown(f"### {top[0]['label']}  \n{top[0]['prob']:.1%} confident")
    fig = go.Figure(go.Bar(x=[t["prob"] for t in top][::-1], y=[t["label"] for t in top][::-1], orientation="h",
                           text=[f"{t['prob']:.1%}" for t in top][::-1], textposition="auto"))
    fig.update_layout(height=60 + 40 * len(top), margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis={"range": [0, 1]})
    cols[2].plotly_chart(fig, width="stretch", key=f"bars-{f.name}-{id(f)}")
