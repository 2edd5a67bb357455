"""Class (operator): everyone's jobs and runs, the class table, publishing, deleting, the disk.

Drawn only for the browser session that opened the operator link (``ui/identity.py``);
the navigation lists it for that session alone, and the page checks again.  Visitors
appear under the name they gave themselves, else a short alias of their owner id:
never their workspace key, which this page does not know.
"""
import time

import streamlit as st

from core import disk, paths
from core.access import alias
from core.errors import TransferLabError
from core.runs.store import delete_run, list_runs, set_published
from ui import common, identity
from ui import state as S
from ui.jobs import training_queue

S.init_state()  # idempotent: a page works opened directly, not only through app.py
viewer = identity.viewer()
if not viewer.operator:
    st.error("This page is for the operator of this server: open the operator link printed where the server started.")
    st.stop()

st.title("Class (operator)")
queue = training_queue()
runs = list_runs(paths.DEFAULT_RUNS_DIR)
usage = disk.usage_by_owner()
owners = sorted(set(usage) | {j.owner for j in queue.jobs.values()})


def name_of(owner: str) -> str:
    given = S.saved_setup(owner).get(S.NAME) if owner != "operator" else None
    return f"{given} ({alias(owner)})" if isinstance(given, str) and given.strip() else alias(owner)


names = {o: name_of(o) for o in owners}
MB = 2**20

st.subheader("Jobs")
active = [j for j in sorted(queue.jobs.values(), key=lambda j: j.created) if j.active]
if not active:
    st.caption("No job is waiting or running.")
else:
    st.dataframe([{"who": names.get(j.owner, alias(j.owner)), "job": j.title, "status": j.status,
                   # Text in every row (a mixed int/text column logs an Arrow error); blank for a
                   # running job, whose status already says so.
                   "place": f"{place} in line" if (place := queue.position(j)) else "", "note": j.note,
                   "submitted": time.strftime("%H:%M:%S", time.localtime(j.created))} for j in active],
                 hide_index=True, width="stretch")
    pick = st.selectbox("Stop a job", [j.id for j in active], index=None, placeholder="Choose a job to stop",
                        format_func=lambda i: f"{queue.jobs[i].title} — {names.get(queue.jobs[i].owner)}")
    if pick and st.button("Stop it", icon=":material/stop:"):
        queue.stop(queue.jobs[pick], viewer)
        st.rerun()

st.subheader("Class table")
rows = []
for o in owners:
    mine = [r for r in runs if r["owner"] == o]
    best = max(mine, key=lambda r: r["summary"].get("best_val_acc") or 0, default=None)
    u = usage.get(o, {"uploads": 0, "datasets": 0, "exports": 0, "runs": 0})
    rows.append({"who": names[o], "runs": len(mine),
                 "best val acc": round(100 * (best["summary"].get("best_val_acc") or 0), 1) if best else None,
                 "best run": best["name"] if best else "", "jobs waiting/running": sum(
                     1 for j in queue.jobs.values() if j.owner == o and j.active),
                 "quota used (MB)": round(disk.counted(u) / MB, 1), "runs on disk (MB)": round(u["runs"] / MB, 1)})
st.dataframe(rows, hide_index=True, width="stretch",
             column_config={"best val acc": st.column_config.NumberColumn(format="%.1f%%"),
                            "who": st.column_config.TextColumn(width="medium", pinned=True),
                            "best run": st.column_config.TextColumn(width="large")})  # every column in view
st.caption(f"Quota per visitor: {disk.QUOTA_BYTES / MB:.0f} MB of uploads, datasets made here and exports "
           "(TRANSFERLAB_QUOTA_MB); runs are not counted.")

st.subheader("Runs")
by_dir = {r["dir"]: r for r in runs}


def label(d: str) -> str:
    r = by_dir[d]
    return f"{r['name']} — {names.get(r['owner'], alias(r['owner']))} · {r['summary'].get('best_val_acc', 0):.1%}"


published = [d for d, r in by_dir.items() if r["published"]]
chosen = st.multiselect("Shared with the class (every visitor sees these on Compare and Predict)", list(by_dir),
                        default=published, format_func=label, key=f"published-{len(by_dir)}-{len(published)}")
if set(chosen) != set(published):
    for d in set(chosen) ^ set(published):
        set_published(d, d in chosen, viewer)
    st.rerun()
doomed = st.multiselect("Delete runs", list(by_dir), format_func=label, placeholder="Choose runs to delete")
if doomed and st.button(f"Delete {len(doomed)} run(s) from disk", type="primary", icon=":material/delete:"):
    for d in doomed:
        try:
            delete_run(d, viewer)
        except TransferLabError as e:
            st.error(str(e))
    st.rerun()

st.subheader("Disk")
totals = disk.totals()
# Sizes in words: a column of MB read "sessions 0" for a few KB of setups (the walk took it for none).
st.dataframe([{"what": k, "size": f"{v / MB:.1f} MB" if v >= MB / 10 else f"{v / 1024:.0f} KB" if v else "empty"}
              for k, v in totals.items()], hide_index=True)
c1, c2, c3 = st.columns(3)
if c1.button("Clear the feature cache", help="Frozen-body features on disk and in memory: the next run of each "
                                             "setup extracts them again."):
    st.success(f"Freed {disk.clear_feature_cache() / MB:.0f} MB.")
if c2.button("Clear exports", help="Exported models and bundles: they are made again on demand."):
    st.success(f"Freed {disk.clear_exports() / MB:.0f} MB.")
if c3.button("Remove stale files", help="Partial runs of stopped processes, unfinished uploads, setups of tabs "
                                        "unseen for 90 days."):
    removed = disk.sweep_stale()
    st.success("Removed: " + ", ".join(f"{n} {k}" for k, n in removed.items()) + ".")
common.page_link("Compare", "Compare runs")
