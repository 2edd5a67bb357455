"""The server's one training queue (``core/runs/jobs.py``), held for the life of the process.

``st.cache_resource`` makes it one object per server: jobs survive page switches,
refreshes and closed tabs; each job belongs to the tab (session id in the URL) that
started it, and a tab sees only its own jobs.  Finished runs are on disk.
"""
from __future__ import annotations

import streamlit as st

from core.runs.jobs import TrainingQueue


@st.cache_resource
def training_queue() -> TrainingQueue:
    return TrainingQueue()
