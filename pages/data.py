"""Data: choose a dataset, see its classes and counts, the skipped files, augmented samples."""
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from core import disk, paths
from core.data import archive, server_folders
from core.data.uploads import accept_zip
from core.errors import TransferLabError
from core.data.transforms import TransformSpec, augmented_samples
from ui import clean_view, common, identity, own_classes
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Data")
demo = paths.demo_dataset()
options = (["demo"] if demo else []) + ["folder", "zip", "own", "cleaned"]
labels = {"demo": "Ants vs bees (demo)", "folder": "A dataset folder on this server", "zip": "Upload a .zip",
          "own": "Make your own classes", "cleaned": "Cleaned (from the Clean page)"}
if st.session_state[S.DATA_SOURCE] not in options:
    S.put(S.DATA_SOURCE, options[0])
st.radio("Dataset", options, format_func=labels.get, horizontal=True, **S.bind(S.DATA_SOURCE))
source = st.session_state[S.DATA_SOURCE]
if not demo:
    st.caption("The ants/bees demo photos are not on this machine (expected in ../shared/datasets/hymenoptera_data).")
    if st.button("Download the ants/bees demo (45 MB, from pytorch.org)", icon=":material/download:"):
        bar = st.progress(0.0, text="Downloading…")
        try:
            paths.fetch_demo_dataset(lambda done, total: bar.progress(min(done / max(total, 1), 1.0),
                                                                      text=f"Downloading… {done / 2**20:.0f} MB"))
            # It lands in the data folder, which is never a "folder on the server": it is the demo.
            S.put(S.DATA_SOURCE, "demo")  # found there from now on (paths.demo_dataset)
            st.rerun()
        except TransferLabError as e:
            bar.empty()
            st.error(f"The demo could not be downloaded: {e}")

refused = None  # a refused upload: its message replaces the summary, the setup is unchanged
if source == "folder":
    # Only folders the operator offers (core/data/server_folders.py), shown by their names
    # under the offered folder, never by their place on the server's disk.
    offers = {str(o.path): o.label for o in server_folders.offered_folders()}
    in_use = S.data_path()  # the stored folder, when it is still allowed
    if in_use and in_use != st.session_state[S.FOLDER_PATH]:
        S.put(S.FOLDER_PATH, in_use)  # stored as resolved, as the list holds it
    if in_use and in_use not in offers:  # allowed but not listed (deeper, or not a dataset yet): keep it visible
        offers[in_use] = server_folders.label(Path(in_use))
    if offers:
        bound = S.bind(S.FOLDER_PATH)
        if st.session_state[bound["key"]] not in offers:
            st.session_state[bound["key"]] = None  # "nothing chosen", not silently the first folder
        st.selectbox("Dataset folder", list(offers), format_func=offers.get, placeholder="Choose a folder",
                     help="Folders the operator of this server offers: train/ and val/ class folders, "
                          "or one folder of class folders.", **bound)
    else:
        st.info(f"No server folders are offered on this server. The operator can put dataset folders into "
                f"the **{server_folders.DATASETS_DIR_NAME}/** folder beside the app, or name folders in "
                f"`{server_folders.ROOTS_ENV}`. Meanwhile, upload a .zip or make your own classes.")
    if st.session_state[S.FOLDER_PATH] and in_use is None:  # e.g. an old saved setup: said as any refusal is
        refused = server_folders.REFUSAL
    elif not offers:
        st.stop()
elif source == "zip":
    up = st.file_uploader("A .zip of class folders (or of train/ and val/)", type=["zip"])
    if up is None and st.session_state[S.ZIP_NAME]:
        st.caption(f"Using **{st.session_state[S.ZIP_NAME]}**, uploaded earlier. Upload another .zip to replace it.")
    if up is not None and st.session_state.get("_zip_seen") != up.file_id:
        bar = st.progress(0.0, text=f"Checking and extracting {up.name}…")
        try:
            data, owner = up.getvalue(), identity.owner()
            # What it unpacks to is what stays (the archive is not kept): that is what must fit.
            disk.require_room(owner, max(len(data), disk.zip_unpacked_bytes(data)), up.name)
            root = accept_zip(data, up.name, owner, progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Extracting {up.name}…"))
            st.session_state["_zip_seen"], st.session_state["_zip_refused"] = up.file_id, None
            S.put(S.ZIP_PATH, str(root))
            S.put(S.ZIP_NAME, up.name)
            st.rerun()  # so the sidebar and every page see the new dataset in the same click
        except TransferLabError as e:
            st.session_state["_zip_seen"], st.session_state["_zip_refused"] = up.file_id, str(e)
        finally:
            bar.empty()
    if up is not None and st.session_state.get("_zip_seen") == up.file_id:
        refused = st.session_state.get("_zip_refused")
elif source == "own":
    own_classes.render()  # says what is missing until the dataset is ready to train on
elif source == "cleaned":
    clean_view.data_section()  # the visitor's cleaned datasets (ui/clean_view.py)

if refused:
    st.error(refused)
    kept = S.data_label()
    st.info(f"Nothing changed: the dataset in use is still **{kept}**." if S.data_path() else "No dataset is selected yet.")
    st.stop()

if S.data_path() is None:  # this page is where a dataset is chosen: say how, not "go to Data"
    if source in ("own", "cleaned"):
        st.stop()  # the section above already said what is missing
    st.info("Upload a .zip of class folders above." if source == "zip" else
            "Choose one of the folders offered above." if source == "folder" else
            "No dataset is selected yet.")
    st.stop()
ds = common.require_dataset()
# The split controls, under the dataset they act on: greyed out when it brings its own
# train/ and val/ folders (moving them would change nothing, which reads as a bug).
given = ds.layout == "split" or source == "cleaned"
why = ("A cleaned dataset keeps the split it was cleaned on." if source == "cleaned" else
       "This dataset has its own train/ and val/ folders: they are used as given.") if given else None
c1, c2 = st.columns(2)
c1.slider("Validation fraction", 0.05, 0.5, step=0.05, disabled=given, **S.bind(S.VAL_SPLIT),
          help=why or "Share of each class's images held out for validation (one folder of class folders).")
c2.number_input("Split seed", 0, 10_000, disabled=given, **S.bind(S.DATA_SEED),
                help=why or "Which images are held out: the same seed gives the same split.")
counts = ds.counts()
st.success(f"**{len(ds.classes)} classes**, {len(ds.train)} training and {len(ds.val)} validation images · "
           f"{'given train/ and val/ folders' if ds.layout == 'split' else f'split {1 - ds.val_split:.0%}/{ds.val_split:.0%} with seed {ds.seed}'}"
           f" · **{S.data_label()}**")
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
st.session_state.setdefault("grid_seed", 0)
if st.button("Draw new samples", icon=":material/shuffle:"):
    st.session_state.grid_seed += 1
spec = TransformSpec.from_dict(common.cached_arch_transform(st.session_state[S.ARCH]))
samples = augmented_samples(ds.train, ds.classes, spec, n=8, seed=st.session_state.grid_seed)
if samples:
    st.image([img for img, _ in samples], caption=[label for _, label in samples], width=160)
common.page_link("Model", "Next: choose a model")
