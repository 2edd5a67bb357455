"""Data: choose a dataset, see its classes and counts, the skipped files, augmented samples."""
import hashlib
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core import paths
from core.data import resolve_source
from core.errors import TransferLabError
from core.transforms import TransformSpec, augmented_grid
from ui import common
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Data")
demo = paths.demo_dataset()
options = (["demo"] if demo else []) + ["folder", "zip"]
labels = {"demo": "Ants vs bees (demo)", "folder": "A folder on the server", "zip": "Upload a .zip"}
if st.session_state[S.DATA_SOURCE] not in options:
    st.session_state[S.DATA_SOURCE] = options[0]
source = st.radio("Dataset", options, format_func=labels.get, horizontal=True, key=S.DATA_SOURCE)
if not demo:
    st.caption("The ants/bees demo photos are not on this machine (expected in ../shared/datasets/hymenoptera_data).")
    if st.button("Download the ants/bees demo (45 MB, from pytorch.org)", icon=":material/download:"):
        bar = st.progress(0.0, text="Downloading…")
        try:
            got = paths.fetch_demo_dataset(lambda done, total: bar.progress(min(done / max(total, 1), 1.0),
                                                                            text=f"Downloading… {done / 2**20:.0f} MB"))
            st.session_state[S.DATA_SOURCE], st.session_state[S.DATA_PATH] = "folder", str(got)
            st.rerun()
        except TransferLabError as e:
            bar.empty()
            st.error(f"The demo could not be downloaded: {e}")

if source == "demo":
    st.session_state[S.DATA_PATH] = str(demo)
elif source == "folder":
    st.session_state.setdefault("folder_input", st.session_state[S.DATA_PATH] or "")
    folder = st.text_input("Folder path", key="folder_input",
                           help="A folder with train/ and val/ class folders, or one folder of class folders.")
    if st.button("Use this folder", type="primary"):
        st.session_state[S.DATA_PATH] = folder.strip() or None
else:
    up = st.file_uploader("A .zip of class folders (or of train/ and val/)", type=["zip"])
    if up is not None and st.session_state.get("zip_imported") != up.file_id:
        digest = hashlib.sha1(up.getvalue()).hexdigest()[:12]
        saved = paths.DEFAULT_DATA_DIR / "uploads" / f"{Path(up.name).stem}-{digest}.zip"
        saved.parent.mkdir(parents=True, exist_ok=True)
        if not saved.exists():
            saved.write_bytes(up.getvalue())
        bar = st.progress(0.0, text="Checking and extracting…")
        try:
            root = resolve_source(saved, progress=lambda done, total: bar.progress(done / max(total, 1), text="Extracting…"))
            st.session_state[S.DATA_PATH] = str(root)
            st.session_state["zip_imported"] = up.file_id  # reruns reuse it instead of hashing it again
            bar.progress(1.0, text=f"Extracted to {root}")
        except TransferLabError as e:
            bar.empty()
            saved.unlink(missing_ok=True)
            st.error(str(e))

c1, c2 = st.columns(2)
c1.slider("Validation fraction (one-folder layout only)", 0.05, 0.5, step=0.05, key=S.VAL_SPLIT)
c2.number_input("Split seed", 0, 10_000, key=S.DATA_SEED)

ds = common.require_dataset()
counts = ds.counts()
st.success(f"**{len(ds.classes)} classes**, {len(ds.train)} training and {len(ds.val)} validation images · "
           f"{'given train/ and val/ folders' if ds.layout == 'split' else f'split {1 - ds.val_split:.0%}/{ds.val_split:.0%} with seed {ds.seed}'} · `{ds.root}`")
fig = go.Figure([go.Bar(name=split, x=ds.classes, y=[counts[split][c] for c in ds.classes]) for split in ("train", "val")])
fig.update_layout(barmode="group", height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="Images per class")
st.plotly_chart(fig, width="stretch")

with st.expander(f"Skipped files: {len(ds.skipped)}", expanded=False):
    if ds.skipped:
        st.dataframe([{"file": p, "reason": r} for p, r in ds.skipped], width="stretch", hide_index=True)
    else:
        st.write("Every image file was readable.")

st.subheader("Augmented training samples")
st.caption("RandomResizedCrop + horizontal flip, as the network sees them while training.")
if "grid_seed" not in st.session_state:
    st.session_state.grid_seed = 0
if st.button("Draw new samples", icon=":material/shuffle:"):
    st.session_state.grid_seed += 1
spec = TransformSpec.from_dict(common.cached_arch_transform(st.session_state[S.ARCH]))
st.image(augmented_grid(ds.train, ds.classes, spec, n=8, seed=st.session_state.grid_seed), width="content")
common.page_link("Model", "Next: choose a model")
