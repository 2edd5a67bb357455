"""What the server does once, when it starts (the lifespan of ``app.py``'s ``st.App``),
before the first visitor arrives:

* imports what the pages use, so two first visitors never import a library at the same
  time from two script threads (a half-imported pandas raised "partially initialized
  module 'pandas' has no attribute 'Series'" in a Train page under two tabs);
* sweeps what a killed server left (partial runs, unfinished uploads, old tab setups);
* starts the training queue, which puts the jobs a restart interrupted back in line and
  runs them without anyone having to open a page;
* prints the operator's link, once, to the terminal that started the server (never in
  a page).
"""
from __future__ import annotations

import asyncio
import importlib
import logging
from contextlib import asynccontextmanager

log = logging.getLogger("transferlab")
# Everything a page imports lazily: first imports are not thread-safe across script runs.
WARM = ("numpy", "pandas", "pyarrow", "pyarrow.pandas_compat", "plotly.graph_objects", "plotly.express",
        "plotly.subplots", "plotly.io", "plotly.tools", "plotly.offline", "PIL.Image", "torch.utils.serialization",
        "altair", "torch", "torchvision", "safetensors.torch", "core.jobs.queue", "core.serving.predict",
        "core.serving.export", "core.runs.bundle", "core.training.experiment", "core.disk")


def warm_imports() -> None:
    """Import, and run once, what the pages use: plotly and pandas import most of their
    modules lazily, on first use, so importing the packages alone is not enough."""
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional one (pyarrow comes with streamlit; onnx is only for export)
            log.info("start-up: %s is not installed", name)
    import pandas as pd
    import plotly.express as px
    import plotly.graph_objects as go
    import plotly.io as pio
    from PIL import Image
    from plotly.subplots import make_subplots
    try:  # what st.dataframe does with a frame
        import pyarrow as pa
        pa.Table.from_pandas(pd.DataFrame({"n": [1.0], "s": ["x"]}))
    except ImportError:
        pass
    try:  # st.plotly_chart's theme: a template naming every trace type, each imported on first use
        from streamlit.elements.lib.streamlit_plotly_theme import configure_streamlit_plotly_theme
        configure_streamlit_plotly_theme()
        pio.to_json(go.Figure(layout={"template": "streamlit"}))
    except (ImportError, KeyError, ValueError):  # another Streamlit: the pages then import these themselves
        pass
    fig = make_subplots(rows=1, cols=2)
    fig.add_trace(go.Scatter(x=[1], y=[1], error_y={"array": [0.1]}), row=1, col=1)
    fig.add_trace(go.Bar(x=[1], y=[1], orientation="h"), row=1, col=2)
    fig.add_hline(y=0.5, annotation_text="chance")
    fig.update_xaxes(type="log")
    for f in (fig, px.imshow([[1, 2], [3, 4]], text_auto=True), px.bar([{"c": "a", "v": 1}], x="c", y="v")):
        pio.to_json(f)
        f.to_plotly_json()
    Image.init()  # every image plugin, once
    try:  # the Inside page's feature map (its tooltips can show a photo; plotly's cannot)
        import altair as alt
        alt.Chart(pd.DataFrame({"x": [1.0], "y": [1.0], "c": ["a"]})).mark_point().encode(
            x="x:Q", y="y:Q", color="c:N", tooltip=["c"]).to_dict()
    except ImportError:
        pass


def base_url() -> str:
    from streamlit import config
    host = config.get_option("server.address") or "localhost"
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"http://{host}:{config.get_option('server.port')}" + (f"/{base}" if base else "")


def start_up() -> None:
    from core import disk
    from ui import identity
    from ui.jobs import training_queue
    warm_imports()
    removed = {k: v for k, v in disk.sweep_stale().items() if v}
    queue = training_queue()
    waiting = sum(1 for j in queue.jobs.values() if j.active)
    print("\n  transferlab: the operator (teacher) view is at\n"
          f"    {identity.operator_link(base_url())}\n"
          "  Keep this link to yourself: whoever opens it sees, stops and deletes everyone's work.\n"
          + (f"  Back in line after the restart: {waiting} job(s).\n" if waiting else "")
          + (f"  Removed leftovers: {', '.join(f'{n} {k}' for k, n in removed.items())}.\n" if removed else ""),
          flush=True)


@asynccontextmanager
async def lifespan(_app):
    await asyncio.to_thread(start_up)
    yield
