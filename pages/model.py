"""Model: architecture, weights, head and freeze strategy; the stage table and load report."""
import hashlib
from pathlib import Path

import streamlit as st

from core import paths
from core.errors import TransferLabError
from core.surgery import stages_of
from ui import common
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


def arch_label(name: str) -> str:
    i = by_name[name]
    mark = "pretrained weights here" if i["pretrained_local"] else "pretrained: needs download"
    family = f" ({i['family']})" if i["family"] != name else ""
    return f"{name}{family} · {(i['params'] or 0) / 1e6:.1f}M params · {mark}"


st.selectbox("Architecture (grouped by family)", [i["arch"] for i in infos], key=S.ARCH, format_func=arch_label)
info = by_name[st.session_state[S.ARCH]]

w_labels = {"imagenet": "ImageNet (pretrained)", "none": "Random init (train from scratch)", "file": "Upload a weights file"}
st.radio("Weights", list(w_labels), format_func=w_labels.get, key=S.WEIGHTS, horizontal=True)
if st.session_state[S.WEIGHTS] == "imagenet" and not info["pretrained_local"]:
    st.warning(f"ImageNet weights for **{info['arch']}** are not on this machine: expected "
               f"`$TORCH_HOME/hub/checkpoints/{info['weights_file']}` (from {info['url']}). With internet they are "
               "downloaded on first use; offline, pick a model marked 'pretrained weights here', random init, or upload a file.")
if st.session_state[S.WEIGHTS] == "file":
    up = st.file_uploader("A state_dict in .pth, .pt or .safetensors", type=["pth", "pt", "safetensors"])
    if up is not None:
        digest = hashlib.sha1(up.getvalue()).hexdigest()[:12]
        saved = paths.DEFAULT_DATA_DIR / "uploads" / f"{Path(up.name).stem}-{digest}{Path(up.name).suffix}"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(up.getvalue())
        st.session_state[S.WEIGHTS_FILE] = str(saved)
    if not st.session_state[S.WEIGHTS_FILE]:
        st.info("Upload a file, or choose ImageNet or random init.")
        st.stop()

c1, c2 = st.columns(2)
c1.number_input("Hidden layer units in the new head (0: a single linear layer)", 0, 4096, step=64, key=S.HIDDEN)
c2.slider("Dropout in the new head", 0.0, 0.8, step=0.05, key=S.DROPOUT)

# The structure (stages) does not depend on the weights: read it off a random-init build.
structure = common.cached_model(st.session_state[S.ARCH], num_classes, "none", st.session_state[S.HIDDEN],
                                st.session_state[S.DROPOUT])
stage_names = [n for n, _ in stages_of(structure.model, st.session_state[S.ARCH])]

modes = {"backbone": "Feature extractor (train the head only)", "none": "Fine-tune everything",
         "first": "Freeze the first N stages", "pick": "Pick stages to freeze"}
current = st.session_state[S.FREEZE]
mode_now = "first" if isinstance(current, int) else "pick" if isinstance(current, list) else current
mode = st.radio("Freeze strategy", list(modes), format_func=modes.get, index=list(modes).index(mode_now))
if mode == "first":
    n = st.slider("Stages frozen, from the input", 0, len(stage_names),
                  value=current if isinstance(current, int) and current <= len(stage_names) else max(0, len(stage_names) - 1))
    st.caption(f"Frozen: {', '.join(stage_names[:n]) or 'nothing'} · trains: {', '.join(stage_names[n:]) or 'head only'} + head")
    st.session_state[S.FREEZE] = int(n)
elif mode == "pick":
    picked = st.multiselect("Stages to freeze", stage_names,
                            default=[s for s in current if s in stage_names] if isinstance(current, list) else stage_names[:2])
    st.session_state[S.FREEZE] = list(picked)
else:
    st.session_state[S.FREEZE] = mode

built = None
weights = common.weights_argument()
if weights != "none":
    try:
        built = common.cached_model(st.session_state[S.ARCH], num_classes, weights, st.session_state[S.HIDDEN],
                                    st.session_state[S.DROPOUT])
    except TransferLabError as e:
        st.error(str(e))
summary = common.frozen_summary(built or structure)  # the structure alone when the weights are unavailable

st.subheader("Stages")
st.caption(f"Head: `{summary['head']}` · {summary['in_features']} input features → {num_classes} classes")
rows = [{"stage": r["name"], "parameters": r["params"], "trainable": r["trainable"] > 0,
         "trainable parameters": r["trainable"]} for r in summary["stages"]]
st.dataframe(rows, width="stretch", hide_index=True)
m1, m2, m3 = st.columns(3)
m1.metric("Total parameters", f"{summary['total_params']:,}")
m2.metric("Trainable", f"{summary['trainable_params']:,}")
m3.metric("Trainable share", f"{summary['trainable_params'] / max(summary['total_params'], 1):.2%}")

if built is not None and built.load_report is not None:
    r = built.load_report
    st.subheader("Weights load report")
    st.caption(f"{built.weights}: {r.summary()} · body tensors loaded {r.backbone_loaded}/{r.backbone_total}")
    with st.expander("Details"):
        st.write("**Skipped (shape differs)**")
        st.dataframe(r.skipped_shape or [{"name": "none"}], width="stretch", hide_index=True)
        c1, c2 = st.columns(2)
        c1.write("**Missing (kept random)**")
        c1.write(r.missing or "none")
        c2.write("**Unexpected (in the file only)**")
        c2.write(r.unexpected or "none")
common.page_link("Train", "Next: train it")
