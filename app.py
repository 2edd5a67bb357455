"""transferlab: transfer learning on images, in the browser.  Run: streamlit run app.py

`streamlit run` imports this file to find ``app`` (an ``st.App``, whose lifespan does the
server's start-up: ``ui/server.py``), then runs it as the script of every session, where
``__name__`` is ``"__main__"``.
"""
import os

# Before torch loads OpenMP: its threads sleep between parallel regions instead of
# spinning.  A class server's cores are shared with script threads (and, measured, other
# processes); spinning threads then steal them from each other: MobileNetV2 inference on
# 2 busy cores ran 4 img/s spinning, 17-26 passive (AMD EPYC, AVX2).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

if __name__ != "__main__":
    from ui.server import lifespan
    app = st.App(__file__, lifespan=lifespan)
else:
    from core.device import configure_threads
    from ui import common, identity
    from ui import state as S
    from ui.jobs import training_queue

    st.set_page_config(page_title="transferlab", page_icon=":material/pest_control:", layout="wide")
    S.init_state()
    configure_threads()
    viewer = identity.viewer()

    pages = [
        st.Page("pages/data.py", title="Data", icon=":material/dataset:", default=True),
        st.Page("pages/clean.py", title="Clean", icon=":material/cleaning_services:"),
        st.Page("pages/model.py", title="Model", icon=":material/neurology:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/monitoring:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
        st.Page("pages/inside.py", title="Inside", icon=":material/visibility:"),
    ]
    if viewer.operator:  # the page exists for the operator's session only
        pages.append(st.Page("pages/operator.py", title="Class (operator)", icon=":material/school:"))
    nav = st.navigation(pages)

    def training_status(job) -> None:
        what = "Finding a learning rate" if job.kind == "lr_find" else "Training"
        if job.status == "queued":
            st.caption(f"**{what}:** {job.title} — {training_queue().position(job)} in line")
            return
        r = job.current
        st.markdown(f"**{what}:** {job.title}")
        if r is not None:
            st.progress(training_queue().progress(job), text=f"{r.label}: {r.phase_text()}")

    with st.sidebar:
        # The store of record, as it stands in this run (callbacks have already applied the click).
        st.caption(f"Device: **{common.device_name()}**")
        st.caption(f"Dataset: **{S.data_label()}**")
        st.caption(f"Model: **{S.model_label()}**")
        job = next((j for j in training_queue().of(viewer.owner) if j.active), None)
        if job is not None and nav.title != "Train":  # the Train page shows it in full
            @st.fragment(run_every=2)  # only while this tab has a job: an idle tab costs nothing
            def sidebar_progress():
                if not job.active:
                    st.rerun()  # once: the page redraws without this fragment, and polling stops
                training_status(job)
            sidebar_progress()
        common.workspace_box(viewer)

    with common.error_boundary():
        nav.run()
