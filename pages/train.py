"""Train: hyperparameters, Start/Stop, live progress and curves, and the one-click
transfer-vs-scratch experiment.  Training runs in a background thread (ui/jobs.py)."""
import dataclasses
import time

import streamlit as st

from core.experiment import ExperimentConfig
from core.trainer import TrainConfig
from core.zoo import pretrained_available
from ui import common
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py
from ui.jobs import registry

st.title("Train")
ds = common.require_dataset()
jobs = registry()
owner = st.session_state[S.SESSION]

defaults = st.session_state[S.TRAIN_CFG] or {**TrainConfig().to_dict(), "epochs": 5}
with st.expander("Hyperparameters", expanded=True):
    c1, c2, c3, c4 = st.columns(4)
    optimizer = c1.selectbox("Optimizer", ["sgd", "adam", "adamw"], index=["sgd", "adam", "adamw"].index(defaults["optimizer"]))
    lr = c2.number_input("Learning rate", 1e-6, 1.0, float(defaults["lr"]), format="%.5f")
    momentum = c3.number_input("Momentum (SGD)", 0.0, 0.999, float(defaults["momentum"]))
    weight_decay = c4.number_input("Weight decay", 0.0, 0.1, float(defaults["weight_decay"]), format="%.5f")
    c1, c2, c3, c4 = st.columns(4)
    scheduler = c1.selectbox("Scheduler", ["step", "cosine", "none"], index=["step", "cosine", "none"].index(defaults["scheduler"]),
                             help="step: ×0.1 every 7 epochs, as in the PyTorch tutorial")
    epochs = c2.number_input("Epochs", 1, 200, int(defaults["epochs"]))
    batch_size = c3.number_input("Batch size", 1, 512, int(defaults["batch_size"]))
    seed = c4.number_input("Seed", 0, 1_000_000, int(defaults["seed"]))
    c1, c2, c3 = st.columns(3)
    label_smoothing = c1.number_input("Label smoothing", 0.0, 0.5, float(defaults["label_smoothing"]))
    amp = c2.selectbox("Mixed precision", ["auto", "on", "off"], index=["auto", "on", "off"].index(defaults["amp"]),
                       help="auto: bf16/fp16 on a CUDA GPU, full precision on CPU; on: bf16 on CPU too")
    fast = c3.checkbox("Fast paths (same results, less time)", value=bool(defaults["fast"]))
tc = TrainConfig(epochs=int(epochs), batch_size=int(batch_size), lr=lr, momentum=momentum, weight_decay=weight_decay,
                 optimizer=optimizer, scheduler=scheduler, label_smoothing=label_smoothing, seed=int(seed), amp=amp, fast=fast)
st.session_state[S.TRAIN_CFG] = tc.to_dict()


def experiment(weights: str, freeze, name: str | None) -> ExperimentConfig:
    return ExperimentConfig(data=str(ds.root), arch=st.session_state[S.ARCH], weights=weights, freeze=freeze,
                            hidden=st.session_state[S.HIDDEN], dropout=st.session_state[S.DROPOUT],
                            val_split=st.session_state[S.VAL_SPLIT], name=name, train=dataclasses.replace(tc))


st.caption(f"Model: **{S.model_label()}** · data: **{ds.root.name}** ({len(ds.classes)} classes) · change them on the Model and Data pages.")
running = next((j for j in jobs.of(owner) if j.active), None)
st.session_state[S.BUTTONS_BUSY] = running is not None
name = st.text_input("Run name (optional)", placeholder="generated from the model and time")
c1, c2, c3 = st.columns([1, 1, 2])
if c1.button("Start", icon=":material/play_arrow:", type="primary", disabled=running is not None):
    job = jobs.start(owner, name or S.model_label(), [(name or "run", experiment(common.weights_argument(), st.session_state[S.FREEZE], name or None))])
    st.session_state[S.JOB_ID] = job.id
    st.rerun()
if c2.button("Stop", icon=":material/stop:", disabled=running is None):
    running.stop()
arch = st.session_state[S.ARCH]
can_transfer = pretrained_available(arch)
if c3.button("Transfer vs scratch (3 runs)", icon=":material/science:", disabled=running is not None or not can_transfer,
             help="Same split and seed: pretrained + frozen backbone, pretrained fine-tuned, and from scratch."):
    stamp = time.strftime("%H%M%S")
    job = jobs.start(owner, f"Transfer vs scratch · {arch}", [
        ("pretrained, frozen", experiment("imagenet", "backbone", f"{arch}-frozen-{stamp}")),
        ("pretrained, fine-tuned", experiment("imagenet", "none", f"{arch}-finetune-{stamp}")),
        ("from scratch", experiment("none", "none", f"{arch}-scratch-{stamp}")),
    ])
    st.session_state[S.JOB_ID] = job.id
    st.rerun()
if not can_transfer:
    st.caption(f"Transfer vs scratch needs ImageNet weights for {arch}, which are not on this machine.")


@st.fragment(run_every=1.0)
def live():
    job = jobs.get(st.session_state[S.JOB_ID], owner) or next(iter(jobs.of(owner)), None)
    if job is None:
        st.info("Press **Start** to train, or run the transfer-vs-scratch experiment.")
        return
    if st.session_state.get(S.BUTTONS_BUSY) and not job.active:
        st.session_state[S.BUTTONS_BUSY] = False
        st.rerun()  # the whole page, so Start comes back and Stop greys out
    st.subheader(job.title)
    r = job.current
    if r is not None:
        if r.status == "preparing" or r.phase == "features":
            st.progress(r.batch / r.batches if r.batches and r.phase == "features" else 0.0,
                        text=f"{r.label}: reading images and {'extracting features' if r.phase == 'features' else 'preparing'}…")
        else:
            total = r.config.train.epochs
            frac = ((len(r.history)) + (r.batch / r.batches if r.batches else 0)) / total
            eta = job.eta_seconds()
            st.progress(min(frac, 1.0), text=f"{r.label}: epoch {min(len(r.history) + 1, total)}/{total} · batch {r.batch}/{r.batches}"
                        + (f" · about {eta:.0f}s left" if eta is not None else ""))
    for run in job.runs:
        if run.status == "error":
            st.error(f"{run.label}: {run.error}")
        elif run.status in ("done", "stopped") and run.history:
            how = ("head trained on cached features" if run.path == "frozen-features" else "whole network trained")
            st.success(f"{run.label}: {run.status} · best val accuracy {run.best_val_acc:.1%} · {run.elapsed:.1f}s in all "
                       f"({run.prep_seconds:.1f}s reading images{' and extracting features' if run.path == 'frozen-features' else ''}; "
                       f"{how}) · saved as `{run.run_dir}`")
    series = [(run.label, run.history) for run in job.runs if run.history]
    if series:
        latest = next(run for run in reversed(job.runs) if run.history)
        last = latest.history[-1]
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Val accuracy", f"{last['val_acc']:.1%}")
        m2.metric("Val loss", f"{last['val_loss']:.3f}")
        m3.metric("Time", f"{latest.elapsed:.1f}s")
        if latest.path == "frozen-features":
            m4.metric("Training", "head only", help="The frozen body ran once; each epoch trains the head on its cached output.")
        else:
            m4.metric("Images/s (train)", f"{last['images_per_s']:.0f}")
        st.plotly_chart(common.curves_figure(series), width="stretch", key=f"curves-{job.id}-{sum(len(s[1]) for s in series)}")
    if not job.active and any(run.run_dir for run in job.runs):
        common.page_link("Compare", "Compare the runs")


live()
