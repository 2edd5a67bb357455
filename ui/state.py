"""The user's setup: one store of record in plain session keys, persisted per tab.

Streamlit forgets the value of a widget that is not drawn on the current page, so
widget keys cannot hold anything that must outlive a page.  Here every choice lives in
a plain key (``DATA_SOURCE``, ``ARCH``, ``TRAIN_CFG`` …); a widget is a view of it:
``bind`` copies the stored value into the widget's own key before it is drawn, and the
widget's ``on_change`` callback writes it back and saves the setup.  Callbacks run
before the script, so every page and the sidebar read the new value in the same run.

The setup is saved as JSON under ``<data dir>/sessions/<owner id>.json``, the owner id
being derived from the workspace key kept in the URL (``ui/identity.py``): a refresh,
or a server restart, brings the same setup back.
"""
from __future__ import annotations

import copy
import json
import math
import sys

import streamlit as st

from core import paths
from core.access import owner_id
from core.data import own_dataset, server_folders
from core.errors import DatasetError
from core.runs.store import write_json
from core.training.schedules import RATE_FIELDS, SCHEDULERS, SCHEDULES, schedule_values
from core.training.trainer import TrainConfig
from ui import identity

# Data page
DATA_SOURCE = "data_source"        # "demo" | "folder" | "zip" | "own" | "cleaned"
FOLDER_PATH = "folder_path"        # the folder chosen under "A folder on the server"
ZIP_PATH = "zip_path"              # extracted root of the last accepted .zip
ZIP_NAME = "zip_name"              # its file name as the user gave it
OWN_DATASET = "own_dataset"        # id of the dataset made on the Data page (core/data/own_dataset.py)
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
TRAIN_EDITED = "train_edited"      # the rate fields (schedules.RATE_FIELDS) the user set; the others follow the schedule
RUN_NAME = "run_name"
JOB_ID = "job_id"                  # this tab's latest job (a training run or a learning-rate sweep)
LR_FIND = "lr_find"                # the last learning-rate sweep's result (ui/lr_finder.py), or None
# Compare / Predict
SELECTED_RUNS = "selected_runs"
PREDICT_RUN = "predict_run"
COMPARE_FOCUS = "compare_focus"    # the run under Compare's "A closer look at"
SESSION = identity.SESSION         # the workspace key, kept in the URL across refreshes (never saved)
NAME = "display_name"              # how the visitor wants to appear in the operator's class table

# The dashboard's schedule is fastai's fine_tune: with the default feature-extractor freeze
# there is no body to unfreeze and the head trains under one-cycle (fastai's fit_one_cycle,
# schedules.plan); with "Fine-tune everything" the new head is
# trained before the body is touched, so random head gradients never reach pretrained
# weights (schedules.py).  Its rates are the measured recipe's (schedules.FINE_TUNE_RECIPE),
# as the CLI's: the tutorial's 0.001 left the head near chance after its head-only epoch.
SETUP_DEFAULTS = {DATA_SOURCE: "demo", FOLDER_PATH: None, ZIP_PATH: None, ZIP_NAME: None, OWN_DATASET: None, VAL_SPLIT: 0.2, DATA_SEED: 0,
                  ARCH: "mobilenet_v2", WEIGHTS: "imagenet", WEIGHTS_FILE: None, HIDDEN: 0, DROPOUT: 0.0,
                  FREEZE: "backbone", TRAIN_CFG: {**TrainConfig().to_dict(), "epochs": 5, "schedule": "fine_tune",
                                                  **schedule_values("fine_tune", {})},
                  TRAIN_EDITED: [], RUN_NAME: "", JOB_ID: None, NAME: "", SELECTED_RUNS: [], PREDICT_RUN: None, COMPARE_FOCUS: None, LR_FIND: None}
# Bounds of the Train page's inputs (and of the fields it does not show); a saved setup is
# clamped into them: a widget refuses a value outside its bounds, and a session file is
# not trusted.
TRAIN_LIMITS = {"lr": (1e-6, 1.0), "momentum": (0.0, 0.999), "weight_decay": (0.0, 0.1), "epochs": (1, 200),
                "batch_size": (1, 512), "seed": (0, 1_000_000), "label_smoothing": (0.0, 0.5),
                "freeze_epochs": (1, 50), "lr_spread": (1.0, 10_000.0), "micro_batch": (0, 512), "pct_start": (0.05, 0.95),
                "step_size": (1, 1000), "gamma": (0.0, 1.0), "feature_views": (1, 16), "cache_mb": (0, 1 << 20),
                "unfreeze_div": (1.0, 100.0)}
TRAIN_CHOICES = {"schedule": SCHEDULES, "scheduler": SCHEDULERS, "optimizer": ("sgd", "adam", "adamw"),
                 "amp": ("auto", "on", "off"), "bn_stats": ("auto", "train", "frozen")}
# Inside page: the run looked into (its folder), or None for ImageNet and random init alone.
INSIDE_RUN = "inside_run"
SETUP_DEFAULTS[INSIDE_RUN] = None
# Clean page (ui/clean_view.py): the cleaned dataset in use or under review (core/audit/cleaned.py), and the
# review's progress: per cleaned dataset, the photos marked "keep" (excluded and relabelled ones count as
# reviewed by themselves, from the dataset's own lists).
CLEANED = "cleaned_dataset"
CLEAN_REVIEWED = "clean_reviewed"  # {cleaned id: [photo paths under the source]}
SETUP_DEFAULTS[CLEANED] = None
SETUP_DEFAULTS[CLEAN_REVIEWED] = {}


def _session_file(key: str):
    """Named by the owner id, not the key: a listing of the folder gives no one a workspace."""
    return paths.DEFAULT_DATA_DIR / "sessions" / f"{owner_id(key)}.json"


def saved_setup(owner: str) -> dict:
    """An owner's saved setup as stored (the operator's class table reads names from it)."""
    try:
        with open(paths.DEFAULT_DATA_DIR / "sessions" / f"{owner}.json", encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _load(key: str) -> dict:
    """The saved setup of workspace ``key``, keeping only known keys whose type matches."""
    try:
        with open(_session_file(key), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    out = {}
    for key, default in SETUP_DEFAULTS.items():
        v = saved.get(key, default)
        ok = (default is None or v is None or isinstance(v, type(default))
              or (key == FREEZE and isinstance(v, (str, int, list))) or (isinstance(default, float) and isinstance(v, int)))
        if ok:
            out[key] = train_cfg(v) if key == TRAIN_CFG else v
    if TRAIN_CFG in out:
        edited = out.get(TRAIN_EDITED)
        if TRAIN_EDITED not in saved:  # saved before edits were recorded: a value off the default was the user's
            typed = saved.get(TRAIN_CFG) if isinstance(saved.get(TRAIN_CFG), dict) else {}
            edited = [k for k in RATE_FIELDS if k in typed and out[TRAIN_CFG][k] != TrainConfig().to_dict()[k]]
        out[TRAIN_EDITED] = [k for k in edited if k in RATE_FIELDS] if isinstance(edited, list) else []
        out[TRAIN_CFG] = follow_schedule(out[TRAIN_CFG], out[TRAIN_EDITED])  # the recipe may have changed since
    return out


def follow_schedule(cfg: dict, edited) -> dict:
    """``cfg`` with the rate fields the user did not set (not in ``edited``) at its schedule's
    values: fine_tune's recipe, or TrainConfig's defaults (``schedules.schedule_values``)."""
    return {**cfg, **schedule_values(cfg["schedule"], {k: cfg[k] for k in edited if k in RATE_FIELDS})}


def set_train(changes: dict, edited=(), forget=()) -> None:
    """Change TRAIN_CFG fields: those in ``edited`` become the user's own, those in ``forget``
    follow the schedule again; the rate fields that are not the user's then follow it."""
    mine = [k for k in st.session_state[TRAIN_EDITED] if k not in forget]
    mine += [k for k in edited if k in RATE_FIELDS and k not in mine]
    st.session_state[TRAIN_EDITED] = mine
    put(TRAIN_CFG, follow_schedule({**st.session_state[TRAIN_CFG], **changes}, mine))


def train_cfg(saved: dict) -> dict:
    """A saved TRAIN_CFG made whole: every TrainConfig field, each of its default's type,
    in its widget's bounds and choices; missing or unusable ones take the default (a
    setup saved before a field existed loads with that field's default)."""
    out = dict(SETUP_DEFAULTS[TRAIN_CFG])
    for k, default in out.items():
        v = saved.get(k)
        if isinstance(default, bool) or isinstance(v, bool):
            ok = isinstance(v, bool) and isinstance(default, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(v, (int, float)) and math.isfinite(v) and (isinstance(default, float) or isinstance(v, int))
        else:
            ok = isinstance(v, type(default)) and v in TRAIN_CHOICES.get(k, (v,))
        if ok and k in TRAIN_LIMITS:
            lo, hi = TRAIN_LIMITS[k]
            v = min(max(v, lo), hi)
        if ok:
            out[k] = float(v) if isinstance(default, float) else v
    return out


def save() -> None:
    sid = st.session_state.get(SESSION)
    if not sid:
        return
    try:
        _session_file(sid).parent.mkdir(parents=True, exist_ok=True)
        write_json(_session_file(sid), {k: st.session_state.get(k) for k in SETUP_DEFAULTS})
    except OSError:
        pass  # a read-only disk loses persistence across refreshes, not the session itself


def put(key: str, value) -> None:
    """Change the setup (and save it)."""
    st.session_state[key] = value
    save()


def bind(key: str, field: str | None = None, after=None) -> dict:
    """Widget arguments that make it a view of ``key`` (or of ``key[field]`` for dicts).
    ``after()`` runs after the store changed (to reset dependent choices)."""
    wkey = f"_w.{key}" + (f".{field}" if field else "")
    st.session_state[wkey] = st.session_state[key][field] if field else st.session_state[key]
    return {"key": wkey, "on_change": _from_widget, "args": (wkey, key, field, after)}


def _from_widget(wkey: str, key: str, field: str | None, after) -> None:
    value = st.session_state[wkey]
    if key == TRAIN_CFG:  # a value typed here is the user's; a new schedule brings its rates for the rest
        set_train({field: value}, edited=[field])
    elif field:
        put(key, {**st.session_state[key], field: value})
    else:
        put(key, value)
    if after:
        after()


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
    """This tab's workspace (the login's, else the URL's key after a refresh, else new),
    whether it is the operator's, and its setup: saved, else defaults."""
    _leave_pages_folder_mode()
    identity.take_operator_link()
    ss = st.session_state
    if SESSION not in ss:
        login = identity.login_key()
        if login is not None:
            ss[SESSION], operator = login
            ss[identity.OPERATOR_FLAG] = ss.get(identity.OPERATOR_FLAG) or operator
        else:
            ss[SESSION], note = identity.resolve(st.query_params.get("sid"))
            if note:
                ss[identity.NOTE] = note
    saved = None
    for key, default in SETUP_DEFAULTS.items():
        if key not in st.session_state:
            if saved is None:
                saved = _load(st.session_state[SESSION])
            st.session_state[key] = copy.deepcopy(saved.get(key, default))
    if saved is not None:
        _own_uploads_only()
    if identity.KEY.match(ss[SESSION]) and st.query_params.get("sid") != ss[SESSION]:
        st.query_params["sid"] = ss[SESSION]  # a login's workspace is never put in an address


def _own_uploads_only() -> None:
    """A loaded setup's uploaded zip and weights file must be this visitor's own uploads (a
    setup saved before workspaces had owners pointed into a folder every visitor shared)."""
    from pathlib import Path
    mine = paths.uploads_dir(identity.owner()).resolve()
    for key, also in ((ZIP_PATH, ZIP_NAME), (WEIGHTS_FILE, None)):
        value = st.session_state[key]
        if isinstance(value, str) and not Path(value).resolve().is_relative_to(mine):
            st.session_state[key] = None
            if also:
                st.session_state[also] = None


def data_path() -> str | None:
    """The dataset in use, from the source and the path remembered for it."""
    source = st.session_state[DATA_SOURCE]
    if source == "demo":
        demo = paths.demo_dataset()
        return str(demo) if demo else None
    if source == "own":  # only once it has enough classes and photos: until then nothing is selected
        return own_dataset.ready_path(st.session_state[OWN_DATASET], identity.owner())
    if source == "cleaned":  # the source of the visitor's own cleaning, while it is still theirs to read
        from core.audit import cleaned
        try:
            c = cleaned.load(st.session_state[CLEANED], identity.viewer())
            return str(cleaned.check_source(c.source, c.owner))
        except DatasetError:  # another's, deleted, or its source gone: the Data page says which
            return None
    if source == "folder":  # only a folder the operator offers, whatever a saved setup says
        try:
            return str(server_folders.check_folder(st.session_state[FOLDER_PATH]))
        except DatasetError:  # the Data page says why, in words that tell nothing about the disk
            return None
    path = st.session_state[ZIP_PATH]
    return path.strip() or None if isinstance(path, str) else None


def data_label() -> str:
    source, path = st.session_state[DATA_SOURCE], data_path()
    if path is None:
        return "none selected"
    if source == "zip" and st.session_state[ZIP_NAME]:
        return st.session_state[ZIP_NAME]
    if source == "cleaned":
        from core.audit import cleaned
        try:
            return cleaned.load(st.session_state[CLEANED], identity.viewer()).title
        except DatasetError:
            return "none selected"
    if source == "own":
        try:
            return own_dataset.load(st.session_state[OWN_DATASET]).title
        except own_dataset.OwnDatasetError:  # deleted by another tab since data_path() looked
            return "none selected"
    return "ants vs bees (demo)" if source == "demo" else path.rstrip("/").split("/")[-1]


def cleaning_in_use() -> str | None:
    """The cleaned dataset a run of the current setup trains on (its id), or None."""
    return st.session_state[CLEANED] if st.session_state[DATA_SOURCE] == "cleaned" else None


def weights_argument() -> str:
    w = st.session_state[WEIGHTS]
    return (st.session_state[WEIGHTS_FILE] or "none") if w == "file" else w


def freeze_label(f) -> str:
    if isinstance(f, list):
        return f"freeze {', '.join(f)}" if f else "fine-tune all"
    return {"backbone": "feature extractor", "none": "fine-tune all"}.get(f, f"freeze first {f} stages")


def model_label() -> str:
    w = {"imagenet": "ImageNet", "none": "random init", "file": "file"}[st.session_state[WEIGHTS]]
    if st.session_state[WEIGHTS] == "file":
        from pathlib import Path
        w = Path(st.session_state[WEIGHTS_FILE]).name if st.session_state[WEIGHTS_FILE] else "no weights file yet"
    head = f" · head {st.session_state[HIDDEN]} hidden" if st.session_state[HIDDEN] else ""
    return f"{st.session_state[ARCH]} · {w} · {freeze_label(st.session_state[FREEZE])}{head}"
