"""The Train page's learning-rate finder: submit a sweep, keep its result, plot it, use it.

The sweep is a job of kind "lr_find" in the server's training queue (it trains, so it
waits its turn like a run and never runs in the script).  When it ends, its result is
copied into the tab's store (``S.LR_FIND``) and saved with the setup: the plot and the
suggestion survive reruns, other jobs, a refresh and a server restart (the queue's jobs
do not), at the cost of a few kilobytes of JSON.  The result remembers the setup it was
found for, so the page can say when the setup has changed since.
"""
from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import streamlit as st

from core.jobs.estimates import sweep_iters, sweeps_frozen

from . import state as S

KEPT = ("lrs", "losses", "raw_losses", "suggestion", "steepest", "minimum_over_10", "explanation", "method", "iters",
        "path", "phase", "stopped", "ended", "seconds", "feature_hits", "schedule", "optimizer", "batch_size", "start")


def lr_text(x: float) -> str:
    """1.1e-03, 2e-03: the precision a learning rate deserves."""
    return f"{x:.1e}".replace(".0e", "e")


def setup_of(cfg) -> dict:
    """What a sweep's curve depends on, in words a caption can list when it changed."""
    t = cfg.train
    first = "the head alone" if sweeps_frozen(cfg) else S.freeze_label(cfg.freeze)
    return json.loads(json.dumps({
        "dataset": [str(cfg.data), cfg.val_split], "model": [cfg.arch, str(cfg.weights), cfg.hidden, cfg.dropout],
        "what trains first": first, "optimizer": [t.optimizer, t.momentum, t.weight_decay],
        "batch size": t.batch_size, "label smoothing": t.label_smoothing}))


def duration(seconds: float) -> str:
    return "a second or two" if seconds < 2 else f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def plan_text(cfg, seconds: float, cached: bool) -> str:
    """What pressing the button will do with this setup, and for how long (the queue's estimate)."""
    n = sweep_iters(cfg)
    if sweeps_frozen(cfg):
        first = "" if cached else ", most of it computing the features, which later runs and sweeps reuse"
        return (f"Sweeps the head's rate alone on cached features ({n} steps), as fastai's lr_find before fine_tune: "
                f"about {duration(seconds)} here{first}.")
    return (f"Sweeps the whole network ({S.freeze_label(cfg.freeze)}): {n} steps, each a training batch, about "
            f"{duration(seconds)} here. A fine_tune or gradual schedule with a body to unfreeze sweeps the head on "
            "cached features instead, in seconds.")


def keep(job) -> None:
    """Copy a finished sweep's result into the store, once."""
    if job is None or job.kind != "lr_find" or job.active or not job.result:
        return
    stored = st.session_state[S.LR_FIND]
    if isinstance(stored, dict) and stored.get("job") == job.id:
        return
    r = {k: _finite(job.result.get(k)) for k in KEPT}
    S.put(S.LR_FIND, {**r, "job": job.id, "setup": setup_of(job.runs[0].config)})


def _finite(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _valid(r) -> bool:
    """A stored result is read from a session file: draw it only if it has the shape it should."""
    if not isinstance(r, dict) or not isinstance(r.get("lrs"), list) or not isinstance(r.get("losses"), list):
        return False
    lrs, losses = r["lrs"], r["losses"]
    num = (int, float)
    return (len(lrs) == len(losses) and all(isinstance(x, num) and x > 0 for x in lrs)
            and all(x is None or isinstance(x, num) for x in losses + list(r.get("raw_losses") or []))
            and all(r.get(k) is None or (isinstance(r[k], num) and r[k] > 0) for k in ("suggestion", "steepest", "minimum_over_10")))


def use(value: float) -> None:
    """The "Use" button's callback: runs before the script, so the Learning rate input
    drawn above it shows the new value in the same run."""
    S.set_train({"lr": value}, edited=["lr"])  # the user's choice: a schedule change keeps it


def _nearest(lrs: list[float], x: float) -> int:
    return min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i]) - math.log(x)))


def figure(r: dict) -> go.Figure:
    lrs, smooth, raw = r["lrs"], r["losses"], r.get("raw_losses") or []
    fig = go.Figure()
    if len(raw) == len(lrs):
        fig.add_trace(go.Scatter(x=lrs, y=raw, mode="lines", name="loss per step", opacity=0.3,
                                 line={"color": "#7f7f7f", "width": 1}))
    fig.add_trace(go.Scatter(x=lrs, y=smooth, mode="lines", name="smoothed loss", line={"color": "#1f77b4", "width": 2.5}))
    marks = (("minimum_over_10", "minimum ÷ 10", "#2ca02c"), ("steepest", "steepest descent", "#ff7f0e"))
    for key, label, color in marks:
        x = r.get(key)
        if x:
            y = smooth[_nearest(lrs, x)]
            fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"{label} {lr_text(x)}", opacity=0.6,
                                     marker={"color": color, "size": 10, "symbol": "circle-open", "line": {"width": 2}}))
    s = r.get("suggestion")
    if s:
        y = smooth[_nearest(lrs, s)]
        fig.add_trace(go.Scatter(x=[s], y=[y], mode="markers+text", name=f"suggestion {lr_text(s)}",
                                 text=[lr_text(s)], textposition="bottom center", textfont={"color": "#d62728", "size": 14},
                                 marker={"color": "#d62728", "size": 13, "symbol": "circle"}))
        fig.add_vline(x=s, line={"color": "#d62728", "width": 1, "dash": "dot"})
    ys = [v for v in smooth if v is not None]
    if ys:
        # Scaled to the curve up to its minimum, with room above: the blow-up at the end (up
        # to 4x the minimum, or one wild step past it) runs off the top instead of flattening
        # everything before it into a line.
        low = smooth.index(min(ys))
        lo, hi = min(ys + [v for v in raw if v is not None]), max(v for v in smooth[:low + 1] if v is not None)
        pad = (hi - lo) * 0.1 or 0.1
        fig.update_yaxes(range=[lo - pad, hi + 3 * pad])
    fig.update_xaxes(type="log", title_text="learning rate (log scale)", exponentformat="e")
    fig.update_yaxes(title_text="training loss")
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def _where(r: dict) -> str:
    if r.get("path") == "frozen-features":
        hits = " (features reused from an earlier job)" if r.get("feature_hits") else ""
        return f"the head alone on cached features{hits}"
    return "the whole network" if r.get("path") == "plain" else "the model"


def section(current_cfg, heading: bool = True) -> None:
    """The last sweep of this tab, if any: plot, suggestion, a button to use it.  No heading
    when the sweep's own job is shown just above (it has one)."""
    r = st.session_state[S.LR_FIND]
    if r is None:
        return
    if heading:
        st.subheader("Learning-rate finder")
    if not _valid(r):
        st.info("The saved learning-rate sweep of this tab is unreadable; press **Find a learning rate** for a new one.")
        return
    changed = [k for k, v in setup_of(current_cfg).items() if (r.get("setup") or {}).get(k) != v]
    if changed:
        st.warning(f"Found for a different setup (since then: {', '.join(changed)} changed). Press **Find a learning "
                   "rate** again for a rate that fits this one.", icon=":material/history:")
    if len(r["lrs"]) < 2:
        st.info(f"The sweep ended after {len(r['lrs'])} step(s) ({r.get('ended') or 'stopped'}): nothing to plot.")
        return
    st.plotly_chart(figure(r), width="stretch", key=f"lr-find-{r.get('job')}")
    how = (f"{r.get('iters', len(r['lrs']))} steps on {_where(r)}, rate {lr_text(r['lrs'][0])} to "
           f"{lr_text(r['lrs'][-1])} ({r.get('ended') or 'done'}), {r.get('seconds') or 0:.1f} s; "
           f"{r.get('optimizer')}, batch {r.get('batch_size')}.")
    s = r.get("suggestion")
    if not s:
        st.info(f"No suggestion: {r.get('method') or 'too few steps'}. {how}")
        return
    lo, hi = S.TRAIN_LIMITS["lr"]
    value = float(lr_text(min(max(s, lo), hi)))
    c1, c2 = st.columns([1, 4])
    c1.button(f"Use {lr_text(value)}", icon=":material/check:", on_click=use, args=(value,),
              disabled=st.session_state[S.TRAIN_CFG]["lr"] == value, help="Sets the Learning rate above")
    div = getattr(current_cfg.train, "unfreeze_div", 2.0)
    then = (f" fine_tune trains the head at this rate, then everything at ÷{div:g} of it with rates lower toward the input."
            if r.get("phase") == "frozen" and r.get("schedule") == "fine_tune" else "")
    clamp = f" (the suggestion, {lr_text(s)}, is outside what the input takes)" if value != float(lr_text(s)) else ""
    c2.caption(f"**Suggested {lr_text(value)}**{clamp}: {r.get('explanation') or r.get('method')}. Lighter marks: the "
               f"steepest descent and the minimum ÷ 10, the older rules of thumb. {how}{then}")
