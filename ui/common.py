"""Cached loaders, charts and prerequisite checks the pages share."""
from __future__ import annotations

import contextlib
import copy
import logging
import uuid
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core import paths
from core.errors import TransferLabError
from core.data import own_dataset
from core.data.datasets import scan_dataset
from core.device import device_label
from core.serving.export_files import export_path
from core.serving.predict import Predictor, evaluate
from core.runs.store import visible_runs
from core.models.surgery import freeze, summarize
from core.models.zoo import arch_info, build_model, list_architectures

from . import identity
from . import state as S


def experiment(ds, weights: str | None = None, freeze=None, name: str | None = None, overrides: dict | None = None):
    """The ExperimentConfig of the stored setup.  ``weights``/``freeze`` replace the
    model's, ``overrides`` some TrainConfig fields (the transfer-vs-scratch runs: the
    fine-tuned one takes ``FINE_TUNE_RECIPE``).  Built from the store alone, never from widgets."""
    from core.training.experiment import ExperimentConfig
    ss = st.session_state
    return ExperimentConfig(data=str(ds.root), arch=ss[S.ARCH], weights=weights or S.weights_argument(),
                            freeze=ss[S.FREEZE] if freeze is None else freeze, hidden=int(ss[S.HIDDEN]),
                            dropout=float(ss[S.DROPOUT]), val_split=float(ss[S.VAL_SPLIT]), name=name,
                            train=train_config(overrides), confine=True, owner=identity.owner(),
                            cleaning=S.cleaning_in_use())


def train_config(overrides: dict | None = None):
    """The stored hyperparameters as a TrainConfig, ``overrides`` applied."""
    from core.training.trainer import TrainConfig
    return TrainConfig(**{**st.session_state[S.TRAIN_CFG], **(overrides or {})})

log = logging.getLogger("transferlab")


@contextlib.contextmanager
def error_boundary():
    """Whatever escapes a page body is logged with its trace and an id; the browser gets a
    short message with that id, never the traceback (which names server paths).
    Streamlit's own control flow (st.stop, st.rerun) derives from BaseException and
    passes through."""
    try:
        yield
    except Exception:  # noqa: BLE001 - the boundary: everything unexpected ends here
        error_id = uuid.uuid4().hex[:8]
        log.exception("error %s on a page", error_id)
        st.error(f"Something went wrong on this page (error id **{error_id}**). Your setup is kept; "
                 "the details are in the server log under that id.", icon=":material/error:")


def page_link(title: str, label: str | None = None) -> None:
    """A link to another page, by its file (works under st.navigation and alone)."""
    st.page_link(f"pages/{title.lower()}.py", label=label or f"Go to {title}", icon=":material/arrow_forward:")


@st.cache_data(show_spinner="Reading the dataset…", max_entries=16)
def cached_scan(source: str, val_split: float, seed: int, version: str | None = None):
    """``version`` is part of the cache key only: it changes when a dataset changes under the same path.
    Confined: a link inside a visitor's dataset does not reach the rest of the server."""
    return scan_dataset(source, val_split, seed, confine=True)


def current_dataset():
    """The selected dataset, scanned (cached), or None when none is selected."""
    path = S.data_path()
    if path is None:
        return None
    if st.session_state[S.DATA_SOURCE] == "cleaned":  # its source, its own split, the visitor's lists applied
        from ui import clean_view
        return clean_view.cleaned_dataset(st.session_state[S.CLEANED])
    # A dataset made on the Data page changes under the same path: its fingerprint joins the key.
    version = own_dataset.fingerprint(path) if st.session_state[S.DATA_SOURCE] == "own" else None
    return cached_scan(path, st.session_state[S.VAL_SPLIT], st.session_state[S.DATA_SEED], version)


def require_dataset():
    """The dataset, or a message with a link to the Data page and ``st.stop()``."""
    try:
        ds = current_dataset()
    except TransferLabError as e:
        st.error(f"The selected dataset cannot be used: {e}")
        ds = None
    if ds is None:
        st.info("No dataset is selected yet. Choose one on the Data page first.")
        page_link("Data")
        st.stop()
    return ds


@st.cache_resource(show_spinner="Building the model…", max_entries=8)
def cached_model(arch: str, num_classes: int, weights: str, hidden: int, dropout: float):
    """A built model, shared and never mutated: callers copy it before surgery."""
    return build_model(arch, num_classes, weights, hidden, dropout, seed=0)


def frozen_summary(built) -> dict:
    """Stage table of a cached model with the selected freeze applied to a copy of it."""
    model = copy.deepcopy(built.model)  # cached models are shared: never freeze them in place
    freeze(model, st.session_state[S.ARCH], st.session_state[S.FREEZE])
    return summarize(model, st.session_state[S.ARCH])


@st.cache_data(show_spinner=False)
def all_arch_infos() -> list[dict]:
    return [arch_info(a) for a in list_architectures()]


@st.cache_resource(show_spinner="Loading the run's model…", max_entries=4)
def cached_predictor(run_dir: str, mtime: float, onnx_mtime: float):
    """``onnx_mtime`` is part of the key only: an ONNX export made since moves Predict onto it."""
    return Predictor(run_dir)


def predictor_for(run_dir: str) -> Predictor:
    onnx = export_path(run_dir, "onnx")
    return cached_predictor(run_dir, Path(run_dir, "summary.json").stat().st_mtime,
                            onnx.stat().st_mtime if onnx.is_file() else 0.0)


@st.cache_data(show_spinner="Evaluating on the validation split…", max_entries=8)
def cached_evaluation(run_dir: str, mtime: float) -> dict:
    return evaluate(run_dir)


def runs() -> list[dict]:
    """The finished runs this visitor may see: their own and those published to the class."""
    return visible_runs(paths.DEFAULT_RUNS_DIR, identity.viewer())


def require_runs(message: str) -> list[dict]:
    """The finished runs, or ``message`` with a link to the Train page and ``st.stop()``."""
    found = runs()
    if not found:
        st.info(message)
        page_link("Train")
        st.stop()
    return found


def new_runs_of_this_tab(by_dir: dict, seen_key: str) -> list[str]:
    """Runs this tab trained (newest first) that the page calling this has not shown yet.
    A page keeps the user's own selection, but a run trained since its last visit must
    join it: otherwise Compare and Predict stay on whatever they showed first."""
    from ui.jobs import training_queue
    mine = [str(Path(r.run_dir)) for j in training_queue().of(identity.owner())
            for r in reversed(j.runs) if r.run_dir]
    seen = st.session_state.setdefault(seen_key, set())
    fresh = [d for d in dict.fromkeys(mine) if d in by_dir and d not in seen]
    seen.update(fresh)
    return fresh


def run_label(r: dict) -> str:
    s, c = r["summary"], r["config"]
    stopped = f" · stopped after {s.get('epochs', '?')} of {s.get('epochs_planned', '?')} epochs" if s.get("stopped") else ""
    shared = " · shared with the class" if r.get("published") else ""
    return f"{r['name']} — {c.get('arch')} · best val {s.get('best_val_acc', 0):.1%}{stopped}{shared}"


@st.cache_resource
def device_name() -> str:
    return device_label()


def curves_figure(series: list[tuple[str, list[dict]]], height: int = 380) -> go.Figure:
    """Loss and accuracy per epoch, train dashed and val solid, one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
    for k, (name, history) in enumerate(series):
        color = palette[k % len(palette)]
        epochs = [h["epoch"] for h in history]
        for col, metric in ((1, "loss"), (2, "acc")):
            for split, dash in (("train", "dash"), ("val", "solid")):
                fig.add_trace(go.Scatter(x=epochs, y=[h[f"{split}_{metric}"] for h in history], mode="lines+markers",
                                         name=f"{name} {split}", legendgroup=name, showlegend=col == 1,
                                         line={"color": color, "dash": dash}), row=1, col=col)
    # Where a fine_tune or gradual run let its body train; the label low, clear of accuracies
    # near 1, on a white ground so a loss curve passing under it does not hide it (the walk).
    for x in unfreeze_marks(series):
        fig.add_vline(x=x, row="all", col="all", line={"color": "#868e96", "width": 1, "dash": "dot"},
                      annotation_text="body unfrozen", annotation_position="bottom left", annotation_font_size=11,
                      annotation_font_color="#495057", annotation_bgcolor="rgba(255,255,255,0.85)")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig


def unfreeze_marks(series: list[tuple[str, list[dict]]]) -> list[float]:
    """Between which epochs a run went from its head-only ("frozen") phase to training the
    body: x = the first unfrozen epoch - 0.5, once per distinct place."""
    marks = set()
    for _, history in series:
        for before, after in zip(history, history[1:]):
            if before.get("phase") == "frozen" and after.get("phase") not in (None, "frozen"):
                marks.add(after["epoch"] - 0.5)
    return sorted(marks)


@st.cache_data(show_spinner=False)
def cached_arch_transform(arch: str) -> dict:
    """The transform spec of the weights a model of ``arch`` would load here."""
    from core.data.transforms import TransformSpec
    from core.models.zoo import local_weights, weight_versions
    found = local_weights(arch)
    return TransformSpec.from_weights(found[0] if found else weight_versions(arch)[0]).to_dict()


def workspace_box(viewer) -> None:
    """The sidebar's word on whose workspace this is, and the note when a new one was started."""
    note = st.session_state.get(identity.NOTE)
    if note:
        st.warning(note, icon=":material/fiber_new:")
    with st.expander("Your workspace", icon=":material/badge:"):
        if identity.login_configured() and not st.session_state[S.SESSION].startswith("oidc:"):
            st.button("Log in to keep your work with your account", on_click=st.login, icon=":material/login:")
        if identity.KEY.match(st.session_state[S.SESSION]):
            st.caption("This page's address is your workspace: **bookmark it** to come back to your runs, datasets "
                       "and setup. Anyone you give the address to *is* you here (sees, changes and deletes your work), "
                       "so share it only as you would a password.")
        else:
            st.caption("Your workspace follows your login.")
        st.text_input("Your name for the class table (optional)", max_chars=40, **S.bind(S.NAME),
                      help="Shown to the operator (teacher) beside your runs; nobody else sees it.")
        if viewer.operator:
            st.caption("This browser session is the **operator's**: the Class page shows everyone's work. "
                       "A refresh needs the operator link again.")
