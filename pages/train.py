"""Train: hyperparameters and schedule, Start/Stop, live progress and curves, the one-click
transfer-vs-scratch experiment and the learning-rate finder.  Jobs (runs and sweeps) run
in the server's training queue (core/jobs/queue.py), never in the script run."""
import time
from pathlib import Path

import streamlit as st

from core.models.zoo import pretrained_available
from core.jobs.estimates import feature_signature
from core.training.schedules import FINE_TUNE_RECIPE
from ui import common, data_efficiency_view, lr_finder, schedule_view
from ui import identity
from ui import state as S
from ui.jobs import training_queue

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Train")
ds = common.require_dataset()
queue = training_queue()
owner = identity.owner()

L = S.TRAIN_LIMITS  # the inputs' bounds: the same table a saved setup is checked against
with st.expander("Hyperparameters", expanded=True):
    cfg, freeze = common.train_config(), st.session_state[S.FREEZE]
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Schedule", list(schedule_view.SCHEDULE_LABELS), format_func=schedule_view.SCHEDULE_LABELS.get,
                 help="standard (the PyTorch tutorial): one phase with the Model page's freeze and the scheduler "
                      "beside. fine_tune (fastai): head-only epochs, then everything with discriminative rates under "
                      "one-cycle. gradual (ULMFiT): head first, then one more stage group per epoch.",
                 **S.bind(S.TRAIN_CFG, "schedule"))
    # Inputs with no effect on this setup are greyed out, not hidden: the caption below says why.
    unfreezes = freeze != "backbone"
    if cfg.schedule == "fine_tune":
        c2.number_input("Head-only epochs first", *L["freeze_epochs"], **S.bind(S.TRAIN_CFG, "freeze_epochs"),
                        disabled=not unfreezes,
                        help="Epochs training the new head alone (on cached features) before the body is unfrozen.")
    if cfg.schedule in ("fine_tune", "gradual"):
        c3.number_input("Rate spread toward the input", *L["lr_spread"], step=10.0, format="%g",
                        **S.bind(S.TRAIN_CFG, "lr_spread"), disabled=not unfreezes,
                        help="Discriminative rates once unfrozen: the first stage learns this many times slower than "
                             "the head, stages between geometrically (fastai's slice(lr/spread, lr)). 1: one rate.")
    scheduler_help = ("Used by the standard schedule; step is the PyTorch tutorial's ×0.1 every 7 epochs. fine_tune "
                      "and gradual run one-cycle in each of their phases, also when there is nothing to unfreeze.")
    if schedule_view.scheduler_used(cfg):
        c4.selectbox("Scheduler", list(schedule_view.SCHEDULER_LABELS), format_func=schedule_view.SCHEDULER_LABELS.get,
                     **S.bind(S.TRAIN_CFG, "scheduler"), help=scheduler_help)
    else:  # what this schedule runs, not the standard schedule's stored choice (which stays for when it returns)
        c4.selectbox("Scheduler", ["onecycle"], format_func=schedule_view.SCHEDULER_LABELS.get, disabled=True,
                     key="_scheduler_of_schedule", help=scheduler_help)
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Optimizer", ["sgd", "adam", "adamw"], **S.bind(S.TRAIN_CFG, "optimizer"))
    c2.number_input("Learning rate", *L["lr"], format="%.5f", **S.bind(S.TRAIN_CFG, "lr"),
                    help="The head's (peak) rate. Find a learning rate below suggests one.")
    c3.number_input("Momentum (SGD)", *L["momentum"], **S.bind(S.TRAIN_CFG, "momentum"))
    c4.number_input("Weight decay", *L["weight_decay"], format="%.5f", **S.bind(S.TRAIN_CFG, "weight_decay"))
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Epochs", *L["epochs"], **S.bind(S.TRAIN_CFG, "epochs"))
    c2.number_input("Batch size", *L["batch_size"], **S.bind(S.TRAIN_CFG, "batch_size"))
    c3.number_input("Seed", *L["seed"], **S.bind(S.TRAIN_CFG, "seed"))
    c4.number_input("Label smoothing", *L["label_smoothing"], **S.bind(S.TRAIN_CFG, "label_smoothing"))
    c1, c2 = st.columns([1, 3])
    c1.selectbox("Mixed precision", ["auto", "on", "off"], **S.bind(S.TRAIN_CFG, "amp"),
                 help="auto: bf16/fp16 on a CUDA GPU, full precision on CPU; on: bf16 on CPU too")
    c2.checkbox("Fast paths (same results, less time)", **S.bind(S.TRAIN_CFG, "fast"))
    cfg = common.train_config()  # as the widgets above left it
    st.caption("**Schedule:** " + schedule_view.caption(cfg, freeze, S.freeze_label(freeze)))
    rates = schedule_view.rates_note(cfg, st.session_state[S.TRAIN_EDITED])
    if rates:
        st.caption(rates)
    gap = schedule_view.recipe_gap(cfg, freeze, st.session_state[S.WEIGHTS])
    if gap:
        c1, c2 = st.columns([4, 1])
        c1.info(gap, icon=":material/tips_and_updates:")
        if c2.button("Use the fine-tune recipe"):
            S.set_train(FINE_TUNE_RECIPE, forget=FINE_TUNE_RECIPE)  # the recipe's, following it from now on
            st.rerun()
    if st.session_state[S.WEIGHTS] == "none" and cfg.schedule != "standard" and freeze != "backbone":
        st.warning(f"Random init with **{cfg.schedule}**: its head-only epochs train a classifier on random features, "
                   "which teaches little. From scratch, the standard schedule is the usual choice.",
                   icon=":material/warning:")

with st.expander("Advanced"):
    c1, c2, _ = st.columns([1, 1, 2])
    c1.number_input("Micro-batch (0: measured automatically)", *L["micro_batch"], **S.bind(S.TRAIN_CFG, "micro_batch"),
                    help="Images per forward/backward pass when the whole network trains. Gradients of the slices "
                         "are added up, so the optimiser still steps once per batch, at the batch size's rate; "
                         "BatchNorm layers that train normalise each micro-batch with its own statistics. 0: the "
                         "fastest size for this machine is measured once and remembered.")
    c2.number_input("One-cycle warm-up share", *L["pct_start"], step=0.05, **S.bind(S.TRAIN_CFG, "pct_start"),
                    help="Share of a one-cycle phase's steps spent rising to the peak rate (warm-up share for "
                         "cosine with warm-up).")

st.caption(f"Model: **{S.model_label()}** · data: **{S.data_label()}** ({len(ds.classes)} classes) · "
           "change them on the Model and Data pages.")
mine = queue.of(owner)
active = next((j for j in mine if j.active), None)
st.text_input("Run name (optional)", placeholder="generated from the model and time", **S.bind(S.RUN_NAME))
name = st.session_state[S.RUN_NAME].strip()
counts = (len(ds.train), len(ds.val))
arch = st.session_state[S.ARCH]
c1, c2, c3, c4 = st.columns([1, 1, 2, 2])
if c1.button("Start", icon=":material/play_arrow:", type="primary", disabled=active is not None):
    job = queue.submit(owner, name or S.model_label(), [(name or "run", common.experiment(ds, name=name or None), *counts)])
    S.put(S.JOB_ID, job.id)
    st.rerun()
if c2.button("Stop", icon=":material/stop:", disabled=active is None):
    queue.stop(active, identity.viewer())
    st.rerun()
can_transfer = pretrained_available(arch)
if c3.button("Transfer vs scratch (3 runs)", icon=":material/science:", disabled=active is not None or not can_transfer,
             help="Same split and seed: pretrained + frozen backbone, pretrained fine-tuned, and from scratch."):
    stamp = time.strftime("%H%M%S")
    job = queue.submit(owner, f"Transfer vs scratch · {arch}", [
        ("pretrained, frozen", common.experiment(ds, "imagenet", "backbone", f"{arch}-frozen-{stamp}"), *counts),
        ("pretrained, fine-tuned", common.experiment(ds, "imagenet", "none", f"{arch}-finetune-{stamp}",
                                                     overrides=FINE_TUNE_RECIPE), *counts),
        # The standard schedule's rates (the tutorial's) where the user set none: fine_tune's recipe is not its.
        ("from scratch", common.experiment(ds, "none", "none", f"{arch}-scratch-{stamp}", overrides=S.follow_schedule(
            {**st.session_state[S.TRAIN_CFG], "schedule": "standard"}, st.session_state[S.TRAIN_EDITED])), *counts),
    ])
    S.put(S.JOB_ID, job.id)
    st.rerun()
if c4.button("Find a learning rate", icon=":material/insights:", disabled=active is not None,
             help="Leslie Smith's range test (fastai's lr_find) on this setup, schedule included; nothing is saved."):
    job = queue.submit(owner, f"Learning-rate finder · {arch}", [("learning-rate sweep", common.experiment(ds), *counts)],
                       kind="lr_find")
    S.put(S.JOB_ID, job.id)
    st.rerun()
c1, c2 = st.columns(2)
c1.caption(schedule_view.recipe_text(cfg.epochs) if can_transfer else
           f"Transfer vs scratch needs ImageNet weights for {arch}, which are not on this machine.")
sweep = common.experiment(ds)
c2.caption(lr_finder.plan_text(sweep, queue.estimate(sweep, *counts, kind="lr_find"),
                               feature_signature(sweep) in queue.book.features_done))
de_job = data_efficiency_view.start(queue, owner, ds, disabled=active is not None or not can_transfer)
if de_job is not None:
    S.put(S.JOB_ID, de_job.id)
    st.rerun()


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
    if job.note:  # e.g. "resumed after a server restart": nothing the visitor started is lost, and they are told
        st.info(job.note.capitalize() + ".", icon=":material/restart_alt:")
    trained_on = job.runs[0].config.data if job.runs else None
    if trained_on and S.data_path() and Path(trained_on).resolve() != Path(S.data_path()).resolve():
        # The panel is this tab's last job, and the Data page has moved on since it began.
        st.caption(f"This job uses the dataset at `{trained_on}`; the Data page now selects "
                   f"**{S.data_label()}**, which the next Start will use.")
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
        kept = ("the points already finished are kept as runs; the point in progress is dropped"
                if job.kind == "data_efficiency" else "what was learned so far is kept")
        st.warning(f"Stop requested: it takes effect at the end of the batch in progress; {kept}.",
                   icon=":material/hourglass_top:")
    if job.kind == "data_efficiency":
        data_efficiency_view.job_view(job)
        return
    for run in job.runs:
        if run.status == "error":
            st.error(f"{run.label}: {run.outcome()}")
        elif run.status == "stopped":
            st.warning(f"{run.label}: {run.outcome()}", icon=":material/stop_circle:")
        elif run.status == "done" and job.kind == "lr_find":
            st.success(f"{run.label}: {run.outcome()} · {run.elapsed:.1f}s in all", icon=":material/insights:")
        elif run.status == "done":
            how = {"frozen-features": "head trained on cached features", "plain": "images through the network, unfrozen layers trained"}.get(
                run.path, "head-only epochs on cached features, then the unfrozen layers on images")
            # prep_seconds is the first phase's: a fine_tune run's head-only features may come
            # from an earlier run while its unfrozen epochs still read the photos, as ``how``
            # says (the walk read a bare "features reused" as contradicting "reading images").
            mixed = run.path not in ("frozen-features", "plain")
            prep = (("head-only " if mixed else "") + "features reused from an earlier run" if run.feature_hits else
                    "reading images and extracting features" if run.path.startswith("frozen-features") else "reading images")
            st.success(f"{run.label}: {run.outcome()} · {run.elapsed:.1f}s in all ({run.prep_seconds:.1f}s {prep}; {how})")
    latest = next((run for run in reversed(job.runs) if run.history), None)
    if latest is not None:
        last = latest.history[-1]
        m1, m2, m3, m4 = st.columns(4)
        # The tiles are the last *finished* epoch's, and say which: the status line above names
        # the best epoch, which may be another (a fine_tune run's head-only one).
        ep = last["epoch"]
        m1.metric(f"Val accuracy, epoch {ep}", f"{last['val_acc']:.1%}")
        m2.metric(f"Val loss, epoch {ep}", f"{last['val_loss']:.3f}")
        m3.metric("Time", f"{latest.elapsed:.1f}s")
        if last.get("path", latest.path) == "frozen-features":
            m4.metric(f"Epoch {ep} trained", "head only", help="The frozen body ran once; each epoch trains the head on its cached output.")
        else:
            m4.metric(f"Images/s (train), epoch {ep}", f"{last['images_per_s']:.0f}")
        st.plotly_chart(curves(job), width="stretch", key=f"curves-{job.id}")
    if not job.active and any(run.run_dir for run in job.runs):
        common.page_link("Compare", "Compare the runs")


job = queue.get(st.session_state[S.JOB_ID], owner) or next(iter(mine), None)
lr_finder.keep(job)  # a sweep that ended: its result joins the tab's setup (before it is drawn below)
if job is None:
    st.info("Press **Start** to train, run the transfer-vs-scratch experiment, or find a learning rate first.")
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

lr_finder.section(sweep, heading=job is None or job.kind != "lr_find")
