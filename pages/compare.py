"""Compare: overlay runs' curves, a summary table, and a closer look at one run."""
import uuid
from pathlib import Path

import plotly.express as px
import streamlit as st

from core.access import OPERATOR
from core.errors import RunError
from core.runs.store import delete_run
from ui import clean_compare, common, data_efficiency_view, export_view, identity, schedule_view
from ui import state as S

S.init_state()  # idempotent: a page works opened directly, not only through app.py
viewer = identity.viewer()

st.title("Compare runs")
export_view.import_section(expanded=not common.runs())  # reachable before the first run: a bundle is a run
all_runs = common.require_runs("No finished runs yet. Train one on the Train page.")
all_runs = data_efficiency_view.section(all_runs, viewer)  # the sweep plot, if any; a sweep's point runs leave the list
by_dir = {r["dir"]: r for r in all_runs}
fresh = common.new_runs_of_this_tab(by_dir, "_compare_seen")  # trained here since the last visit: shown first
kept = fresh + [d for d in st.session_state[S.SELECTED_RUNS] if d in by_dir and d not in fresh]
if kept != st.session_state[S.SELECTED_RUNS] or not kept:
    S.put(S.SELECTED_RUNS, kept or [r["dir"] for r in all_runs[:3]])  # deleted runs drop out; none: the newest
chosen = st.multiselect("Runs", list(by_dir), format_func=lambda d: common.run_label(by_dir[d]), **S.bind(S.SELECTED_RUNS))
if not chosen:
    st.info("Pick one or more runs.")
    st.stop()

from core.runs.store import load_run  # noqa: E402
loaded = {d: load_run(d) for d in chosen}
st.plotly_chart(common.curves_figure([(by_dir[d]["name"], loaded[d].get("history", [])) for d in chosen], height=420),
                width="stretch")


def fmt_freeze(f):
    return {"backbone": "feature extractor", "none": "none"}.get(f, str(f)) if not isinstance(f, list) else ", ".join(f)


def row(r: dict) -> dict:
    """One run's line: the outcome first, then what made it (schedule included)."""
    c, s = r["config"], r["summary"]
    last = schedule_view.last_accuracy(r)
    return {"run": r["name"], "best val acc": round(100 * s["best_val_acc"], 1), "best epoch": s["best_epoch"],
            "last val acc": round(100 * last, 1) if last is not None else None, "epochs": s["epochs"],
            "weights": c.get("weights_loaded"), "freeze": fmt_freeze(c["freeze"]),
            "schedule": schedule_view.run_schedule(c), "optimizer": schedule_view.run_optimizer(c),
            "architecture": c["arch"], "head": f"{c.get('hidden')} hidden + linear" if c.get("hidden") else "linear",
            "trainable params": c.get("trainable_params"),
            "time (s)": round(s.get("seconds", s.get("train_seconds", 0)), 1), "images/s": round(s.get("images_per_s", 0)),
            "stopped": s.get("stopped")}


# Accuracy as a number (so the column sorts), shown as a percentage.  The run's name stays
# in view while the 15 columns scroll sideways on a narrow window.
st.dataframe([row(loaded[d]) for d in chosen], width="stretch", hide_index=True,
             column_config={"run": st.column_config.TextColumn(pinned=True),
                            # Wide enough for the sentence it holds (the walk saw "fine_tune:" cut off).
                            "schedule": st.column_config.TextColumn(width="large"),
                            "best val acc": st.column_config.NumberColumn(format="%.1f%%"),
                            "last val acc": st.column_config.NumberColumn(format="%.1f%%")})
clean_compare.section(chosen, loaded, by_dir, viewer)  # which cleaning, and whether the val sets differ

st.divider()
if fresh or st.session_state[S.COMPARE_FOCUS] not in chosen:  # a new run of this tab, else the last look
    S.put(S.COMPARE_FOCUS, chosen[0])
focus = st.selectbox("A closer look at", chosen, format_func=lambda d: common.run_label(by_dir[d]), **S.bind(S.COMPARE_FOCUS))
# One slot for everything about the focused run.  Its first content is a single line, so
# while another run is evaluated the last one's numbers and export download are gone
# rather than left faded and clickable (a container in the same place keeps them).
slot = st.empty()
slot.caption(f"Looking at **{by_dir[focus]['name']}**…")
run = loaded[focus]
owner = by_dir[focus]["owner"]
mine = viewer.can_change(owner)
try:
    ev, problem = common.cached_evaluation(focus, Path(focus, "summary.json").stat().st_mtime), None
except RunError as e:  # an imported run: its photos are on the machine that trained it
    ev, problem = None, (st.info, f"Not evaluated here: {e}.")
except Exception:  # noqa: BLE001 - e.g. the dataset moved since training; the reason may name server paths
    error_id = uuid.uuid4().hex[:8]
    common.log.exception("error %s evaluating run %s", error_id, by_dir[focus]["name"])
    ev, problem = None, (st.error, "Cannot evaluate this run on its validation images (moved or changed since it "
                                   f"was trained?). The details are in the server log under error id **{error_id}**.")
with slot.container():
    phases = schedule_view.phase_rows(run["summary"], run["config"].get("freeze"))
    if phases:
        st.caption(f"Schedule: {schedule_view.run_schedule(run['config'])}")
        st.dataframe(phases, width="stretch", hide_index=True,
                     column_config={"trains": st.column_config.TextColumn(width="large"),
                                    "path": st.column_config.TextColumn(width="medium")})
        kept_head = schedule_view.head_only_best(run)
        if kept_head:
            st.caption(kept_head)
    if problem:
        problem[0](problem[1])
    if ev:
        st.caption(f"Validation accuracy of the saved weights: **{ev['accuracy']:.1%}** on {sum(map(sum, ev['confusion']))} images"
                   + (f" ({len(ev['unreadable'])} files no longer readable)" if ev["unreadable"] else ""))
        c1, c2 = st.columns(2)
        fig = px.imshow(ev["confusion"], x=ev["classes"], y=ev["classes"], text_auto=True, color_continuous_scale="Blues",
                        labels={"x": "predicted", "y": "true", "color": "images"}, title="Confusion matrix")
        c1.plotly_chart(fig, width="stretch")
        per = [{"class": c, "accuracy": a} for c, a in ev["per_class"].items() if a is not None]
        c2.plotly_chart(px.bar(per, x="class", y="accuracy", range_y=[0, 1], title="Per-class accuracy"), width="stretch")

        st.subheader("Validation images, mistakes first")
        if not (mine or owner == OPERATOR):  # a classmate's run shown to the class: its photos stay theirs
            st.caption("This run was shared with the class by the operator; its validation photos stay private to "
                       "the student who trained it.")
            ev = {**ev, "predictions": []}
        rows = sorted(ev["predictions"], key=lambda r: (r["true"] == r["pred"], r["prob"]))
        show = st.slider("How many", 4, min(64, len(rows)), min(16, len(rows)), step=4) if len(rows) > 4 else len(rows)
        cols = st.columns(4)
        for k, r in enumerate(rows[:show]):
            mark = "right:" if r["true"] == r["pred"] else "WRONG:"
            cols[k % 4].image(r["path"], caption=f"{mark} pred {r['pred']} ({r['prob']:.0%}) · true {r['true']}", width="stretch")

    st.divider()
    if not mine:
        st.caption("Shared with the class by the operator: use it on the Predict page. Exporting and deleting it "
                   "are for its owner.")
        st.stop()
    export_view.section(focus, run["name"], key="compare")
    st.divider()
    with st.popover("Delete this run", icon=":material/delete:"):
        st.write(f"Delete **{run['name']}** and its weights from disk?")
        if st.button("Delete", type="primary"):
            delete_run(focus, viewer)
            S.put(S.SELECTED_RUNS, [d for d in chosen if d != focus])
            st.rerun()
