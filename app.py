"""transferlab: transfer learning on images, in the browser.  Run: streamlit run app.py"""
import streamlit as st

from core.device import configure_threads
from ui import common
from ui import state as S
from ui.jobs import registry

st.set_page_config(page_title="transferlab", page_icon=":material/pest_control:", layout="wide")
S.init_state()
configure_threads()

pages = {
    "Data": st.Page("pages/data.py", title="Data", icon=":material/dataset:", default=True),
    "Model": st.Page("pages/model.py", title="Model", icon=":material/neurology:"),
    "Train": st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    "Compare": st.Page("pages/compare.py", title="Compare", icon=":material/monitoring:"),
    "Predict": st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
}
nav = st.navigation(list(pages.values()))


@st.fragment(run_every=2)
def training_status():
    """The sidebar's live view of this tab's training."""
    job = next((j for j in registry().of(st.session_state[S.SESSION]) if j.active), None)
    if job is None:
        return
    r = job.current
    st.markdown(f"**Training:** {job.title}")
    if r is not None:
        frac = ((r.epoch - 1) + (r.batch / r.batches if r.batches else 0)) / max(1, r.config.train.epochs)
        what = "extracting features" if r.phase == "features" else f"epoch {r.epoch}/{r.config.train.epochs}"
        st.progress(min(max(frac, 0.0), 1.0), text=f"{r.label}: {what}")


with st.sidebar:
    st.caption(f"Device: **{common.device_name()}**")
    path = st.session_state.get(S.DATA_PATH)
    st.caption(f"Dataset: **{path.rstrip('/').split('/')[-1] if path else 'none selected'}**")
    st.caption(f"Model: **{S.model_label()}**")
    training_status()

nav.run()
