"""Clean: audit the dataset for mislabelled photos, duplicates, train/val leaks and outliers,
decide photo by photo (or in bulk) in a cleaned dataset that leaves the source as it is,
undo, and retrain before and after in one click."""
import streamlit as st

from ui import clean_gallery, clean_view, common, identity
from ui import state as S
from ui.jobs import training_queue

S.init_state()  # idempotent: a page works opened directly, not only through app.py

st.title("Clean your data")
st.caption("A bee filed under ants, the same photo twice, a photo in both train and val (which flatters the "
           "validation accuracy), a screenshot that belongs to no class: with a few hundred photos, each of these "
           "moves the accuracy. The audit finds them with a pretrained network; you decide, in a cleaned copy of the "
           "dataset's lists. The photos themselves are never changed.")
viewer = identity.viewer()
t = clean_view.target(viewer)
c = t.cleaning
st.markdown(f"Auditing **{t.source['label']}**: {len(t.ds.train)} training and {len(t.ds.val)} validation photos, "
            f"classes {', '.join(t.ds.classes)}."
            + (f" Decisions go to **{c.title}**." if c else " Your first decision makes a cleaned dataset of it."))
error = st.session_state.pop(clean_gallery.ERROR, None)
if error:
    st.error(error)

report = clean_view.audit(t)
if report is None:
    st.stop()

keeps = clean_view.reviewed(c.id if c else None)
total = len(clean_gallery.review_keys(t, report))
done = clean_gallery.decided(t, report, keeps)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Label issues", len(report.label_issues), help="Photos whose given class the cross-validated head doubts.")
m2.metric("Train/val leaks", len(report.leaks), help="Photos in train with a copy in val.")
m3.metric("Near-duplicates", len(report.near_duplicates), help="The same photo twice within train or within val.")
m4.metric("Outliers", len(report.outliers), help="Photos far from every class.")
if total:
    st.progress(done / total, text=f"Reviewed {done} of {total}")
seconds = clean_view.seconds_of_last_audit()
st.caption(f"Audited with {report.arch} ({report.weights}) in {seconds:.1f} s"
           + (" from cached features." if report.cached else "."))

tabs = st.tabs([f"Label issues ({len(report.label_issues)})", f"Leaks ({len(report.leaks)})",
                f"Duplicates ({len(report.near_duplicates)})", f"Outliers ({len(report.outliers)})"],
               key="clean_tab", on_change="rerun")  # a tracked tab: a decision's rerun stays on the tab it was made in
with tabs[0]:
    clean_gallery.label_issues(t, report.label_issues, keeps)
with tabs[1]:
    clean_gallery.pairs(t, report.leaks, keeps, "leaks")
with tabs[2]:
    clean_gallery.pairs(t, report.near_duplicates, keeps, "duplicates")
with tabs[3]:
    clean_gallery.outliers(t, report.outliers, keeps)

st.divider()
st.subheader("The cleaned dataset")
c = t.cleaning  # a decision above may have made it
if c is None:
    st.caption("Nothing decided yet.")
    st.stop()
st.markdown(f"**{c.title}**: {len(c.exclude)} photo{'s' * (len(c.exclude) != 1)} excluded, {len(c.relabel)} "
            f"relabelled. The source stays as it is; the Data page offers this dataset under *Cleaned*.")
last = c.history[-1]["what"] if c.history else None
if st.button(f"Undo: {last}" if last else "Nothing to undo", icon=":material/undo:", disabled=last is None,
             key="clean_undo"):
    from core.audit import cleaned
    cleaned.undo(c.id, viewer)
    st.rerun()
queue = training_queue()
active = next((j for j in queue.of(viewer.owner) if j.active), None)
both = st.checkbox("Also train the uncleaned dataset, for the comparison", value=True, key="clean_both",
                   help="Same setup, same seed: Compare then shows both runs, and scores both on the cleaned "
                        "validation photos.")
if st.button("Retrain on the cleaned dataset", icon=":material/model_training:", type="primary",
             disabled=active is not None, key="clean_retrain",
             help="Selects the cleaned dataset on the Data page and trains the current setup (Model and Train pages) "
                  "on it." + (" Your job in the queue must end first." if active else "")):
    job = clean_view.retrain(t, queue, viewer.owner, both)
    S.put(S.JOB_ID, job.id)
    st.switch_page("pages/train.py")
st.caption(f"Trains **{S.model_label()}** with the Train page's settings.")
