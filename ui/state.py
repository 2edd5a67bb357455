"""Session state: every key the pages share is a constant here, with its default."""
from __future__ import annotations

import sys
import uuid

import streamlit as st

# Data page
DATA_SOURCE = "data_source"        # "demo" | "folder" | "zip"
DATA_PATH = "data_path"            # folder or extracted zip path in use
VAL_SPLIT = "val_split"
DATA_SEED = "data_seed"
# Model page
ARCH = "arch"
WEIGHTS = "weights"                # "imagenet" | "none" | "file"
WEIGHTS_FILE = "weights_file"      # saved upload path when WEIGHTS == "file"
HIDDEN = "hidden"
DROPOUT = "dropout"
FREEZE = "freeze"                  # "backbone" | "none" | int | list of stage names
# Train page
TRAIN_CFG = "train_cfg"            # dict of TrainConfig fields
JOB_ID = "job_id"                  # this tab's latest job
BUTTONS_BUSY = "train_buttons_busy"  # Start/Stop were drawn while a job ran (they sit outside the live fragment)
# Compare / Predict
SELECTED_RUNS = "selected_runs"
PREDICT_RUN = "predict_run"
SESSION = "session_id"             # one per browser tab, kept in the URL across refreshes

DEFAULTS = {DATA_SOURCE: "demo", DATA_PATH: None, VAL_SPLIT: 0.2, DATA_SEED: 0, ARCH: "mobilenet_v2",
            WEIGHTS: "imagenet", WEIGHTS_FILE: None, HIDDEN: 0, DROPOUT: 0.0, FREEZE: "backbone",
            TRAIN_CFG: None, JOB_ID: None, SELECTED_RUNS: [], PREDICT_RUN: None}


def _leave_pages_folder_mode() -> None:
    """Streamlit decides once per process, on its first script run, whether a ``pages/``
    folder means its old folder-based navigation; only ``st.navigation`` turns that off.
    A server whose first visitor opens ``/train`` directly would never run app.py (no
    sidebar, old page list) for anyone.  Turn it off and rerun through app.py."""
    if "streamlit.testing.v1.app_test" in sys.modules:
        return  # AppTest opens pages one by one on purpose (and resets the flag every run)
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the flag has no such mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def init_state() -> None:
    """Defaults for missing keys, and this tab's id: from the URL after a refresh, else new."""
    _leave_pages_folder_mode()
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    if st.session_state[DATA_SOURCE] == "demo" and st.session_state[DATA_PATH] is None:
        from core.paths import demo_dataset  # zero clicks: the demo is the dataset until one is chosen
        demo = demo_dataset()
        st.session_state[DATA_PATH] = str(demo) if demo else None
    if SESSION not in st.session_state:
        sid = st.query_params.get("sid") or uuid.uuid4().hex[:12]
        st.session_state[SESSION] = sid
    if st.query_params.get("sid") != st.session_state[SESSION]:
        st.query_params["sid"] = st.session_state[SESSION]


def model_label() -> str:
    w = {"imagenet": "ImageNet", "none": "random init", "file": "file"}[st.session_state[WEIGHTS]]
    f = st.session_state[FREEZE]
    f = {"backbone": "feature extractor", "none": "fine-tune all"}.get(f, f"freeze {f}") if not isinstance(f, list) else "custom freeze"
    return f"{st.session_state[ARCH]} · {w} · {f}"
