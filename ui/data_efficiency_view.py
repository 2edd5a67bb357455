"""The data-efficiency experiment in the dashboard: Train's button and live view, Compare's plot.

The sweep (``core/training/data_efficiency.py``) is one job of the server's queue.  Its
summary is rewritten after every point; the Train page draws the job's summary while it
runs, Compare draws the saved ones, with the same figure.  Error bars span the lowest to
the highest seed (min–max): with 2–3 seeds a standard deviation says little, the range
shows every seed.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import paths
from core.access import owner_of
from core.errors import TransferLabError
from core.training import data_efficiency as de

from . import common
from .lr_finder import duration

COLORS = {"frozen": "#1f77b4", "scratch": "#d62728", "fine_tune": "#2ca02c"}
SEEDS = 2
ARMS = ("frozen", "scratch")


def curves(summary: dict) -> dict[str, list[dict]]:
    """Per arm, one row per n with finished points: x (images per class), mean, min, max."""
    rows: dict[str, dict] = {}
    for p in summary.get("points", []):
        acc = p.get("best_val_acc")
        if p.get("status") != "done" or not isinstance(acc, (int, float)):
            continue
        row = rows.setdefault(p["arm"], {}).setdefault(str(p["n"]), {"n": p["n"], "x": p["images_per_class"], "accs": []})
        row["accs"].append(acc)
    return {arm: sorted(({**r, "mean": sum(r["accs"]) / len(r["accs"]), "lo": min(r["accs"]), "hi": max(r["accs"])}
                         for r in by_n.values()), key=lambda r: r["x"])
            for arm, by_n in rows.items()}


def n_label(row: dict) -> str:
    return f"all ({row['x']:.0f})" if row["n"] == "all" else str(row["n"])


def figure(summary: dict, height: int = 420) -> go.Figure:
    fig = go.Figure()
    ticks = {}
    for arm, rows in curves(summary).items():
        ticks.update({r["x"]: n_label(r) for r in rows})
        fig.add_trace(go.Scatter(
            x=[r["x"] for r in rows], y=[r["mean"] for r in rows], mode="lines+markers", name=de.ARM_LABELS.get(arm, arm),
            line={"color": COLORS.get(arm), "width": 2.5}, marker={"size": 9},
            error_y={"type": "data", "symmetric": False, "array": [r["hi"] - r["mean"] for r in rows],
                     "arrayminus": [r["mean"] - r["lo"] for r in rows], "thickness": 1.5, "width": 6},
            customdata=[[n_label(r), len(r["accs"]), r["lo"], r["hi"]] for r in rows],
            hovertemplate="%{customdata[0]} images per class<br>mean %{y:.1%} over %{customdata[1]} seed(s)"
                          "<br>range %{customdata[2]:.1%} – %{customdata[3]:.1%}<extra></extra>"))
    classes = summary.get("classes") or []
    if len(classes) >= 2:
        fig.add_hline(y=1 / len(classes), line={"dash": "dot", "color": "#7f7f7f"},
                      annotation_text=f"chance ({1 / len(classes):.0%})", annotation_position="bottom right")
    xs = sorted(ticks)
    fig.update_xaxes(type="log", title_text="training images per class (log scale)", tickvals=xs,
                     ticktext=[ticks[x] for x in xs])
    fig.update_yaxes(title_text="best validation accuracy", range=[0, 1.02], tickformat=".0%")
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=True,  # even for one arm
                      legend={"orientation": "h", "y": -0.22})
    return fig


def table_rows(summary: dict) -> list[dict]:
    """One row per n: each arm's mean and min–max over seeds, in percent."""
    out: dict[str, dict] = {}
    for arm, rows in curves(summary).items():
        for r in rows:
            cell = f"{r['mean']:.1%}" + (f" ({r['lo']:.1%}–{r['hi']:.1%})" if len(r["accs"]) > 1 else "")
            out.setdefault(n_label(r), {"x": r["x"], "images per class": n_label(r)})[de.ARM_LABELS.get(arm, arm)] = cell
    arms = [de.ARM_LABELS.get(a, a) for a in curves(summary)]
    return [{"images per class": row["images per class"], **{a: row.get(a, "—") for a in arms}}  # "—": not run (yet)
            for row in sorted(out.values(), key=lambda r: r["x"])]


def describe(summary: dict) -> str:
    points = summary.get("points", [])
    done = sum(p.get("status") == "done" for p in points)
    how = ("the subset repeated to the training split's size each epoch, so every point takes the same steps"
           if summary.get("repeat", True) else "epochs over the subset alone")
    state = "" if summary.get("status") == "done" else f" **{summary.get('status', '?')}**: "
    return (f"{state}{done} of {len(points)} points · {summary.get('arch')} · {summary.get('epochs')} epochs per point "
            f"({how}) · validated on the same {summary.get('num_val')} images · seeds {summary.get('seeds')}. Lines join "
            "the mean over seeds; error bars span the lowest to the highest seed. Each point is a saved run.")


def start(queue, owner: str, ds, disabled: bool):
    """Train's one-click button with what it will do and for how long; the job, once pressed."""
    from ui import state as S
    base = common.experiment(ds, "imagenet" if S.weights_argument() == "none" else None)
    c1, c2 = st.columns([1, 3])
    try:
        sweep = de.plan(base, ds, de.DEFAULT_NS, SEEDS, ARMS)
    except TransferLabError as e:
        c2.caption(f"Data-efficiency experiment unavailable: {e}")
        return None
    pressed = c1.button("Data-efficiency experiment", icon=":material/stacked_line_chart:", disabled=disabled,
                        help="Transfer learning's headline claim, measured: accuracy against training images per class.")
    ns = ", ".join(map(str, sweep.ns))
    c2.caption(f"Trains the pretrained frozen model and the same network from scratch on {ns} images per class "
               f"({SEEDS} seeds each, seeded subsets, the same validation images; {len(sweep.points)} saved runs) and "
               f"plots best validation accuracy against n on Compare. About "
               f"{duration(queue.estimate_sweep(sweep))} here: the frozen curve takes seconds after one feature pass, "
               "almost all of it is the scratch runs.")
    return queue.submit_sweep(owner, f"Data efficiency · {base.arch}", sweep) if pressed else None


def job_view(job) -> None:
    """The Train page's view of a running or finished sweep."""
    sweep = job.sweep
    summary = sweep.summary()
    for p in sweep.points:
        if p.status == "error":
            st.error(f"{p.label}: failed: {p.error}")
    done = sum(p.status == "done" for p in sweep.points)
    if not job.active:
        saved = sum(p.run is not None for p in sweep.points)
        text = (f"{done} of {len(sweep.points)} points done, {saved} saved as runs; the Compare page plots the "
                "finished points and lists them under its Data efficiency section.")
        (st.success if job.status == "done" else st.warning)(f"Data efficiency {job.status}: {text}")
    if done:
        st.plotly_chart(figure(summary, height=380), width="stretch", key=f"de-{job.id}-{done}")
        st.caption(describe(summary))
    if not job.active and done:
        common.page_link("Compare", "See it on Compare")


def section(all_runs: list[dict], viewer) -> list[dict]:
    """Compare's "Data efficiency" section (when the visitor saved a sweep); returns the runs
    for the multiselect: a sweep's point runs are left out unless asked for (24 runs of
    one sweep would bury the runs someone trained by hand; the plot above sums them up)."""
    sweeps = [s for s in de.list_sweeps(paths.DEFAULT_RUNS_DIR) if viewer.can_see(owner_of(s))]
    points = [r for r in all_runs if isinstance(r["config"].get("sweep"), dict)]
    if sweeps:
        st.subheader("Data efficiency")
        k = 0
        if len(sweeps) > 1:
            k = st.selectbox("Sweep", range(len(sweeps)), format_func=lambda i: f"{sweeps[i]['id']} ({sweeps[i].get('status')})")
        st.plotly_chart(figure(sweeps[k]), width="stretch", key="de-compare")
        st.caption(describe(sweeps[k]))
        rows = table_rows(sweeps[k])
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch")
    if not points:
        return all_runs
    show = st.checkbox(f"List the {len(points)} point runs of data-efficiency sweeps below", value=False)
    return all_runs if show else [r for r in all_runs if not isinstance(r["config"].get("sweep"), dict)]
