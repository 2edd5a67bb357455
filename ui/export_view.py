"""Take the model away (Compare and Predict) and bring a run in (Compare).

Exporting runs in the script (tens of seconds for ONNX): the file is written, loaded
back with the standalone loader and checked on the run's validation images before a
download is offered; an export that disagrees is shown as failed, with its numbers,
and offered nowhere.  A passing export is kept under the run's ``exports/`` folder, so
the next visit (any tab) offers it at once.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import disk, paths
from core.data.uploads import with_temp_file
from core.errors import TransferLabError
from core.runs.bundle import bundle_for, import_bundle
from core.runs.store import read_json, run_owner
from core.serving.export import NEEDS, SNIPPET_FILES, cached_export, export_run, snippet_text

from . import identity
from . import state as S

LABELS = {"onnx": "ONNX (onnxruntime, any language)", "torchscript": "TorchScript (torch, C++ LibTorch)",
          "safetensors": "safetensors (torch + torchvision)", "bundle": "Run bundle (.zip, for another transferlab)"}
MIME = {"onnx": "application/octet-stream", "torchscript": "application/octet-stream",
        "safetensors": "application/octet-stream", "bundle": "application/zip"}


def section(run_dir: str, run_name: str, key: str, heading: bool = True) -> None:
    """Format choice, export with its parity check, download, and a use-it-elsewhere snippet.
    The run's owner's (or the operator's) only: pages call it for them alone, and it checks."""
    try:
        identity.viewer().require_change(run_owner(run_dir), f"run {run_name!r}")
    except TransferLabError as e:
        st.info(str(e))
        return
    if heading:
        st.subheader("Take the model away")
    fmt = st.radio("Format", list(LABELS), format_func=LABELS.get, horizontal=True, key=f"export-format-{key}")
    if fmt == "bundle":
        st.caption("The whole run (config, classes, history, transforms, weights) in one .zip: import it on the "
                   "Compare page of another transferlab, then use it on Predict as if it had been trained there.")
        try:
            bundle = bundle_for(run_dir)
        except TransferLabError as e:
            st.error(str(e))
            return
        disk.touch(bundle)  # recently offered: the exports cache keeps it longest
        disk.trim_exports()
        st.download_button("Download the run bundle", data=bundle.read_bytes(), file_name=bundle.name, mime=MIME[fmt],
                           icon=":material/download:", key=f"export-dl-{key}-{fmt}")
        return
    report = cached_export(run_dir, fmt)
    if report is None:
        st.caption("The export is checked before it is offered: the exported file is loaded back and run on this "
                   "run's validation images (seeded random inputs where they are not on this machine), and its "
                   "logits compared with the PyTorch model's.")
        if not st.button(f"Export to {fmt}", icon=":material/output:", key=f"export-go-{key}-{fmt}"):
            return
        with st.spinner(f"Exporting to {fmt} and checking it against the PyTorch model…"):
            try:
                report = export_run(run_dir, fmt)
            except TransferLabError as e:
                st.error(str(e), icon=":material/error:")
                return
    path = Path(report["path"])
    disk.touch(path)
    disk.trim_exports()
    st.success(f"Checked: {report['summary']}.", icon=":material/verified:")
    st.download_button(f"Download {path.name} ({report['bytes'] / 2**20:.1f} MB)", data=path.read_bytes(),
                       file_name=path.name, mime=MIME[fmt], icon=":material/download:", key=f"export-dl-{key}-{fmt}")
    script = SNIPPET_FILES[fmt]
    st.caption(f"Use it elsewhere: save this as `{script}` beside **{path.name}** and run "
               f"`python {script} photo.jpg` (needs {NEEDS[fmt]}; no transferlab). The class names, input size "
               "and mean/std are read from the file.")
    st.code(snippet_text(fmt, path.name), language="python")


def import_section(expanded: bool = False) -> None:
    """Upload a run bundle: checked like any hostile file, then listed with the other runs."""
    with st.expander("Import a run bundle (.zip)", expanded=expanded, icon=":material/upload:"):
        up = st.file_uploader("A run bundle exported from transferlab", type=["zip"], key="bundle-upload")
        if up is None:
            return
        seen = st.session_state.get("_bundle_seen")
        if seen is None or seen[0] != up.file_id:
            try:  # the zip is read and then deleted: the imported run is what is kept
                run_dir = with_temp_file(up.getvalue(), identity.owner(), ".zip", lambda tmp: import_bundle(
                    tmp, paths.DEFAULT_RUNS_DIR, display_name=paths.clean_upload_name(up.name), owner=identity.owner()))
                original = read_json(run_dir / "config.json").get("imported", {}).get("name")
                seen = (up.file_id, None, f"Imported **{run_dir.name}**" + (
                    "" if run_dir.name == original else f" (a run named {original} was already here)")
                        + ": it is selected below and on the Predict page.")
                S.put(S.SELECTED_RUNS, [str(run_dir)] + [d for d in st.session_state[S.SELECTED_RUNS] if d != str(run_dir)])
                S.put(S.PREDICT_RUN, str(run_dir))
            except TransferLabError as e:
                seen = (up.file_id, str(e), None)
            st.session_state["_bundle_seen"] = seen
        if seen[1]:
            st.error(seen[1], icon=":material/block:")
        else:
            st.success(seen[2])

