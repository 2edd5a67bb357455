"""Inside: why transfer works — feature space, first-layer filters, feature maps, and what
fine-tuning changed.  Works for any architecture of the family table and any run."""
import io

import streamlit as st

from core.data.images import ImageReadError, load_rgb
from core.device import pick_device
from core.models.zoo import pretrained_available
from core.runs.store import load_run
from ui import common, inside_space, inside_view
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Inside the network")
st.caption("Why transfer learning works, in four pictures: a pretrained body already separates your classes before "
           "any training, its first layer detects edges and colours common to all photos, its stages go from edges "
           "to object parts, and fine-tuning moves the stages near the head more than those near the input.")
ds = common.require_dataset()
visible = common.runs()  # this visitor's runs and those shared with the class: never another visitor's
by_dir = {r["dir"]: r for r in visible}
if st.session_state[S.INSIDE_RUN] is not None and st.session_state[S.INSIDE_RUN] not in by_dir:
    S.put(S.INSIDE_RUN, None)  # deleted, or no longer shared
st.selectbox("A trained run to look inside (optional)", [None, *by_dir],
             format_func=lambda d: "none: ImageNet and random init only" if d is None else common.run_label(by_dir[d]),
             help="Its body joins the feature space and the feature maps, its first layer the filters, and section 4 "
                  "shows what its training changed. The architecture of the page is the run's, else the Model page's.",
             **S.bind(S.INSIDE_RUN))
run = load_run(st.session_state[S.INSIDE_RUN]) if st.session_state[S.INSIDE_RUN] else None
arch = run["config"]["arch"] if run else st.session_state[S.ARCH]
device = pick_device("auto")
seed = int(st.session_state[S.TRAIN_CFG]["seed"])  # a scratch run's init, and the training view, on the Train page
n = len(ds.classes)
imagenet = inside_view.body("imagenet", arch, n, 0) if pretrained_available(arch) else None
random = inside_view.body("random", arch, n, seed)
run_body = inside_view.run_body(run["dir"], inside_view.run_mtime(run)) if run else None
bodies = [b for b in (imagenet, random, run_body) if b is not None]
st.caption(f"Architecture **{arch}** on **{S.data_label()}** ({len(ds.train)} training and {len(ds.val)} validation "
           f"photos, classes {', '.join(ds.classes)})."
           + ("" if imagenet else f" No ImageNet weights for {arch} on this machine: ImageNet's columns stay empty."))

inside_space.section(ds, bodies, device, run)
st.divider()
inside_view.filters_section(arch, imagenet, random, run, visible)
st.divider()

st.header("3 · Feature maps: one photo, shallow to deep", anchor="feature-maps")
source = st.radio("Photo", ["From the dataset", "Upload", "Camera"], horizontal=True, key="inside_photo_source")
image, name = None, None
if source == "From the dataset":
    photos = ds.val or ds.train
    pick = st.selectbox("Validation photo", range(len(photos)), key="inside_photo",
                        format_func=lambda i: f"{ds.classes[photos[i][1]]} · {photos[i][0].rsplit('/', 1)[-1]}")
    path = photos[pick][0]
    try:
        image, name = load_rgb(path), path.rsplit("/", 1)[-1]
    except ImageReadError as e:  # changed on disk since the scan
        st.error(f"**{path.rsplit('/', 1)[-1]}** cannot be read any more ({e}).")
else:
    f = st.file_uploader("A photo", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"],
                         key="inside_upload") if source == "Upload" else st.camera_input("A photo", key="inside_camera")
    if f is not None:
        try:
            image, name = load_rgb(io.BytesIO(f.getvalue())), f.name
        except ImageReadError as e:
            st.error(f"**{f.name}** cannot be used ({e}).")
if image is not None:
    inside_view.maps_section(bodies, image, name, run)
else:
    st.info("Choose a photo to follow it through the network.")
st.divider()
inside_view.change_section(ds, run, device)
