"""Train: hyperparameters, Start/Stop, live progress and curves, and the one-click
transfer-vs-scratch experiment.  Jobs run in the server's training queue (core/runs/jobs.py)."""
import time

import streamlit as st

from core.models.zoo import pretrained_available
from ui import common
from ui import state as S
from ui.jobs import training_queue

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Train")
ds = common.require_dataset()
queue = training_queue()
owner = st.session_state[S.SESSION]

with st.expander("Hyperparameters", expanded=True):
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Optimizer", ["sgd", "adam", "adamw"], **S.bind(S.TRAIN_CFG, "optimizer"))
    c2.number_input("Learning rate", 1e-6, 1.0, format="%.5f", **S.bind(S.TRAIN_CFG, "lr"))
    c3.number_input("Momentum (SGD)", 0.0, 0.999, **S.bind(S.TRAIN_CFG, "momentum"))
    c4.number_input("Weight decay", 0.0, 0.1, format="%.5f", **S.bind(S.TRAIN_CFG, "weight_decay"))
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Scheduler", ["step", "cosine", "none"], help="step: ×0.1 every 7 epochs, as in the PyTorch tutorial",
                 **S.bind(S.TRAIN_CFG, "scheduler"))
    c2.number_input("Epochs", 1, 200, **S.bind(S.TRAIN_CFG, "epochs"))
    c3.number_input("Batch size", 1, 512, **S.bind(S.TRAIN_CFG, "batch_size"))
    c4.number_input("Seed", 0, 1_000_000, **S.bind(S.TRAIN_CFG, "seed"))
    c1, c2, c3 = st.columns(3)
    c1.number_input("Label smoothing", 0.0, 0.5, **S.bind(S.TRAIN_CFG, "label_smoothing"))
    c2.selectbox("Mixed precision", ["auto", "on", "off"], **S.bind(S.TRAIN_CFG, "amp"),
                 help="auto: bf16/fp16 on a CUDA GPU, full precision on CPU; on: bf16 on CPU too")
    c3.checkbox("Fast paths (same results, less time)", **S.bind(S.TRAIN_CFG, "fast"))

st.caption(f"Model: **{S.model_label()}** · data: **{S.data_label()}** ({len(ds.classes)} classes) · "
           "change them on the Model and Data pages.")
mine = queue.of(owner)
active = next((j for j in mine if j.active), None)
st.text_input("Run name (optional)", placeholder="generated from the model and time", **S.bind(S.RUN_NAME))
name = st.session_state[S.RUN_NAME].strip()
counts = (len(ds.train), len(ds.val))
c1, c2, c3 = st.columns([1, 1, 2])
if c1.button("Start", icon=":material/play_arrow:", type="primary", disabled=active is not None):
    job = queue.submit(owner, name or S.model_label(), [(name or "run", common.experiment(ds, name=name or None), *counts)])
    S.put(S.JOB_ID, job.id)
    st.rerun()
if c2.button("Stop", icon=":material/stop:", disabled=active is None):
    queue.stop(active)
    st.rerun()
arch = st.session_state[S.ARCH]
can_transfer = pretrained_available(arch)
if c3.button("Transfer vs scratch (3 runs)", icon=":material/science:", disabled=active is not None or not can_transfer,
             help="Same split and seed: pretrained + frozen backbone, pretrained fine-tuned, and from scratch."):
    stamp = time.strftime("%H%M%S")
    job = queue.submit(owner, f"Transfer vs scratch · {arch}", [
        ("pretrained, frozen", common.experiment(ds, "imagenet", "backbone", f"{arch}-frozen-{stamp}"), *counts),
        ("pretrained, fine-tuned", common.experiment(ds, "imagenet", "none", f"{arch}-finetune-{stamp}"), *counts),
        ("from scratch", common.experiment(ds, "none", "none", f"{arch}-scratch-{stamp}"), *counts),
    ])
    S.put(S.JOB_ID, job.id)
    st.rerun()
if not can_transfer:
    st.caption(f"Transfer vs scratch needs ImageNet weights for {arch}, which are not on this machine.")


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def curves(job):
    """The job's curves, rebuilt only when a new epoch arrived."""
    series = [(run.label, run.history) for run in job.runs if run.history]
    version = (job.id, sum(len(h) for _, h in series))
    cached = st.session_state.get("_curves")
    if not cached or cached[0] != version:
        cached = (version, common.curves_figure(series) if series else None)
        st.session_state["_curves"] = cached
    return cached[1]


def show_job(job) -> None:
    st.subheader(job.title)
    if job.status == "queued":
        pos = queue.position(job)
        st.info(f"Waiting in the server's training queue: **{ordinal(pos)} in line**, starts in about "
                f"**{queue.wait_seconds(job):.0f} s** (estimated from the jobs ahead). Training runs one job at a "
                "time here, so each finishes as fast as the machine allows.", icon=":material/hourglass_top:")
    elif job.status == "running":
        r = job.current
        eta = queue.eta_seconds(job)
        text = f"{r.label}: {r.phase_text()}" if r else "starting…"
        st.progress(queue.progress(job), text=f"{text} · about {eta:.0f} s left for the whole job")
    if job.active and job.stop_event.is_set():
        st.warning("Stop requested: it takes effect at the end of the batch in progress; what was learned so far "
                   "is kept.", icon=":material/hourglass_top:")
    for run in job.runs:
        if run.status == "error":
            st.error(f"{run.label}: {run.outcome()}")
        elif run.status == "stopped":
            st.warning(f"{run.label}: {run.outcome()}", icon=":material/stop_circle:")
        elif run.status == "done":
            how = "head trained on cached features" if run.path == "frozen-features" else "whole network trained"
            prep = ("features reused from an earlier run" if run.feature_hits else
                    "reading images and extracting features" if run.path == "frozen-features" else "reading images")
            st.success(f"{run.label}: {run.outcome()} · {run.elapsed:.1f}s in all ({run.prep_seconds:.1f}s {prep}; {how})")
    latest = next((run for run in reversed(job.runs) if run.history), None)
    if latest is not None:
        last = latest.history[-1]
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Val accuracy", f"{last['val_acc']:.1%}")
        m2.metric("Val loss", f"{last['val_loss']:.3f}")
        m3.metric("Time", f"{latest.elapsed:.1f}s")
        if latest.path == "frozen-features":
            m4.metric("Training", "head only", help="The frozen body ran once; each epoch trains the head on its cached output.")
        else:
            m4.metric("Images/s (train)", f"{last['images_per_s']:.0f}")
        st.plotly_chart(curves(job), width="stretch", key=f"curves-{job.id}")
    if not job.active and any(run.run_dir for run in job.runs):
        common.page_link("Compare", "Compare the runs")


job = queue.get(st.session_state[S.JOB_ID], owner) or next(iter(mine), None)
if job is None:
    st.info("Press **Start** to train, or run the transfer-vs-scratch experiment.")
elif not job.active:
    show_job(job)  # finished: drawn once, no polling
else:
    # Polls only while this tab has a job: every second while it runs, every 3 s while it
    # waits (many waiting tabs must not slow the one that trains).
    status = job.status

    @st.fragment(run_every=1.0 if status == "running" else 3.0)
    def live():
        with common.error_boundary():
            if job.status != status:
                st.rerun()  # the whole page: buttons and polling follow the new state
            show_job(job)
    live()
