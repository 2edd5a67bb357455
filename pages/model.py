"""Model: architecture, weights, head and freeze strategy; the stage table and load report."""
from pathlib import Path

import streamlit as st

from core import disk, paths
from core.models.checkpoint import read_state_dict
from core.errors import TransferLabError
from core.models.surgery import stages_of
from ui import common, identity
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Model")
try:
    ds = common.current_dataset()
except TransferLabError:
    ds = None
num_classes = len(ds.classes) if ds else 2
if ds is None:
    st.info("No dataset selected: the head is shown for 2 classes. Choose a dataset on the Data page.")
    common.page_link("Data")

infos = sorted(common.all_arch_infos(), key=lambda i: (i["family"], i["params"] or 0))
by_name = {i["arch"]: i for i in infos}
if st.session_state[S.ARCH] not in by_name:
    S.put(S.ARCH, S.SETUP_DEFAULTS[S.ARCH])


def arch_label(name: str) -> str:
    i = by_name[name]
    mark = "pretrained weights here" if i["pretrained_local"] else "pretrained: needs download"
    family = f" ({i['family']})" if i["family"] != name else ""
    # torchvision's count is the ImageNet model's (1000-class head): say so, as the totals below count ours.
    return f"{name}{family} · {(i['params'] or 0) / 1e6:.1f}M params with the ImageNet head · {mark}"


st.selectbox("Architecture (grouped by family)", [i["arch"] for i in infos], format_func=arch_label, **S.bind(S.ARCH))
arch = st.session_state[S.ARCH]
info = by_name[arch]

w_labels = {"imagenet": "ImageNet (pretrained)", "none": "Random init (train from scratch)", "file": "Upload a weights file"}
st.radio("Weights", list(w_labels), format_func=w_labels.get, horizontal=True, **S.bind(S.WEIGHTS))
if st.session_state[S.WEIGHTS] == "imagenet" and not info["pretrained_local"]:
    st.warning(f"ImageNet weights for **{arch}** are not on this machine: expected "
               f"`$TORCH_HOME/hub/checkpoints/{info['weights_file']}` (from {info['url']}). With internet they are "
               "downloaded on first use; offline, pick a model marked 'pretrained weights here', random init, or upload a file.")
if st.session_state[S.WEIGHTS] == "file":
    up = st.file_uploader("A state_dict in .pth, .pt or .safetensors", type=["pth", "pt", "safetensors"])
    if up is not None and st.session_state.get("_weights_seen") != up.file_id:
        st.session_state["_weights_seen"], st.session_state["_weights_refused"] = up.file_id, None
        try:
            disk.require_room(identity.owner(), up.size, up.name)
            saved = paths.save_upload(up.getvalue(), up.name, identity.owner())
            read_state_dict(saved)  # refused files never become the selected weights
            S.put(S.WEIGHTS_FILE, str(saved))
            st.rerun()
        except TransferLabError as e:
            st.session_state["_weights_refused"] = str(e)
    if up is not None and st.session_state.get("_weights_refused"):
        st.error(st.session_state["_weights_refused"])
        if st.session_state[S.WEIGHTS_FILE]:
            st.info(f"Nothing changed: still using **{Path(st.session_state[S.WEIGHTS_FILE]).name}**, uploaded before.")
    if not st.session_state[S.WEIGHTS_FILE]:
        if up is None:  # after a refused file the error above says what to do
            st.info("Upload a file, or choose ImageNet or random init.")
        st.stop()

c1, c2 = st.columns(2)
c1.number_input("Hidden layer units in the new head (0: a single linear layer)", 0, 4096, step=64, **S.bind(S.HIDDEN))
c2.slider("Dropout in the new head", 0.0, 0.8, step=0.05, **S.bind(S.DROPOUT))
hidden, dropout = int(st.session_state[S.HIDDEN]), float(st.session_state[S.DROPOUT])

# The structure (stages) does not depend on the weights: read it off a random-init build.
structure = common.cached_model(arch, num_classes, "none", hidden, dropout)
stage_names = [n for n, _ in stages_of(structure.model, arch)]

# A freeze chosen for another architecture is fitted to this one's stages.
current = st.session_state[S.FREEZE]
if isinstance(current, int) and current > len(stage_names):
    S.put(S.FREEZE, len(stage_names))
elif isinstance(current, list) and any(s not in stage_names for s in current):
    S.put(S.FREEZE, [s for s in current if s in stage_names])
current = st.session_state[S.FREEZE]

modes = {"backbone": "Feature extractor (train the head only)", "none": "Fine-tune everything",
         "first": "Freeze the first N stages", "pick": "Pick stages to freeze"}
st.session_state["_freeze_mode"] = "first" if isinstance(current, int) else "pick" if isinstance(current, list) else current


def on_mode() -> None:
    mode = st.session_state["_freeze_mode"]
    default = {"first": max(0, len(stage_names) - 1), "pick": stage_names[:2]}.get(mode, mode)
    S.put(S.FREEZE, default)


st.radio("Freeze strategy", list(modes), format_func=modes.get, key="_freeze_mode", on_change=on_mode)
if isinstance(current, int):
    st.slider("Stages frozen, from the input", 0, len(stage_names), **S.bind(S.FREEZE))
    n = st.session_state[S.FREEZE]
    st.caption(f"Frozen: {', '.join(stage_names[:n]) or 'nothing'} · trains: {', '.join(stage_names[n:]) or 'head only'} + head")
elif isinstance(current, list):
    st.multiselect("Stages to freeze", stage_names, **S.bind(S.FREEZE))

built = None
weights = S.weights_argument()
if weights != "none":
    try:
        built = common.cached_model(arch, num_classes, weights, hidden, dropout)
    except TransferLabError as e:
        st.error(str(e))
summary = common.frozen_summary(built or structure)  # the structure alone when the weights are unavailable

st.subheader("Stages")
st.caption(f"Head: `{summary['head']}` · {summary['in_features']} input features → {num_classes} classes")
rows = [{"stage": r["name"], "parameters": r["params"], "trainable": r["trainable"] > 0,
         "trainable parameters": r["trainable"]} for r in summary["stages"]]
counts = st.column_config.NumberColumn(format="localized")  # 2,223,872 as in the totals below
st.dataframe(rows, width="stretch", hide_index=True,
             column_config={"parameters": counts, "trainable parameters": counts})
m1, m2, m3 = st.columns(3)
m1.metric("Total parameters", f"{summary['total_params']:,}")
m2.metric("Trainable", f"{summary['trainable_params']:,}")
m3.metric("Trainable share", f"{summary['trainable_params'] / max(summary['total_params'], 1):.2%}")

if built is not None and built.load_report is not None:
    r = built.load_report
    st.subheader("Weights load report")
    st.caption(f"{built.weights}: {r.summary()} · body tensors loaded {r.backbone_loaded}/{r.backbone_total}")
    with st.expander("Details"):
        st.write("**Skipped (shape differs)**" + ("" if r.skipped_shape else ": none"))
        if r.skipped_shape:
            st.dataframe(r.skipped_shape, width="stretch", hide_index=True)
        c1, c2 = st.columns(2)
        c1.write("**Missing (kept random)**")
        c1.write(r.missing or "none")
        c2.write("**Unexpected (in the file only)**")
        c2.write(r.unexpected or "none")
common.page_link("Train", "Next: train it")
