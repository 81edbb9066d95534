"""Run detail: a run's flags and reasons first, its curves (live while it runs), confusion matrix, per-class F1,
config, status, log, and its files to download. The run is in the URL (?run=)."""
import io
import zipfile

import pandas as pd
import streamlit as st

from dashboard import common
from healcore.core.errors import StoreError
from healcore.grids.progress import fmt_duration, run_progress
from healcore.results import charts
from healcore.store.runs import RunStore


def flags_of(run: pd.Series, table: pd.DataFrame) -> None:
    """The run's convergence failures, its flags and its cell's surprises, with their reasons, at the top of the
    page."""
    if run["failures"]:
        st.error("**Convergence failure** (left out of its cell): " + "; ".join(run["failures"]),
                 icon=":material/report:")
    if run.get("flags"):
        st.warning("**Flagged** (kept as a measurement): " + "; ".join(run["flags"]), icon=":material/flag:")
    cell = table[[run["run_id"] in ids for ids in table["all_run_ids"]]] if len(table) else table
    if len(cell) and cell.iloc[0]["surprises"]:
        st.warning("**Its cell is a surprise** (a finding, not a failure): " + "; ".join(cell.iloc[0]["surprises"]),
                   icon=":material/lightbulb:")


def curves(root: str, run_id: str) -> None:
    epochs = common.epochs_table(root, common.store_version(root), (run_id,))
    if epochs.empty:
        st.caption("No finished epoch yet.")
        return
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.run_curves(epochs, title="Weighted F1"), width="stretch")
    c2.altair_chart(charts.loss_curve(epochs), width="stretch")


@st.fragment(run_every=3.0)
def live(root: str, run_id: str) -> None:
    runs = common.runs_table(root, common.store_version(root))
    row = runs[runs["run_id"] == run_id]
    if len(row):
        p = run_progress(row.iloc[0].to_dict())
        st.progress(p["share"], text=f"epoch {p['epoch']}/{p['epochs']}, step {p['step']}/{p['steps'] or '?'} · "
                                     f"elapsed {fmt_duration(p['elapsed_s'])} · ETA {fmt_duration(p['eta_s'])}")
    curves(root, run_id)


def files(store: RunStore, run_id: str) -> None:
    run_files = store.files(run_id)
    small = [run_files.config, run_files.status, run_files.metrics, run_files.summary, run_files.probe, run_files.log]
    cols = st.columns(len(small) + 1)
    for col, path in zip(cols, small):
        if path.is_file():
            col.download_button(path.name, path.read_bytes(), path.name, key=f"dl-{path.name}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(run_files.dir.rglob("*")):
            rel = path.relative_to(run_files.dir)
            if path.is_file() and rel.parts[0] != run_files.checkpoints.name and not rel.name.startswith("."):
                z.write(path, f"{run_id}/{rel.as_posix()}")
    cols[-1].download_button("all (zip)", buffer.getvalue(), f"{run_id}.zip", "application/zip", key="dl-zip")


def main() -> None:
    common.set_up_page("Run detail")
    root, runs = common.load_nonempty()
    runs = runs[runs["state"] != "queued"]
    ids = runs["run_id"].tolist()
    if not ids:
        common.nothing_scored_yet(common.runs_table(root, common.store_version(root)))
        return
    asked = common.url_get("run")
    if asked is not None and asked not in ids:  # a link to a run this store does not hold: say so, show no other
        st.warning(f"No run {asked!r} in the store {root}; it may be in another store (choose it in the sidebar), or "
                   f"the link is wrong. Pick a run below.")
        common.url_set("run", None)
    run_id = common.url_selectbox("Run", ids, key="run")
    store = RunStore(root)
    try:
        store.path(run_id)
    except StoreError as err:
        st.error(str(err))
        return
    run = runs[runs["run_id"] == run_id].iloc[0]
    flags_of(run, common.load_cells(root))
    status = store.status(run_id)
    summary = store.summary(run_id) or {}
    c = st.columns([1.1, 1, 1, 1])
    c[0].metric("State", status.get("effective_state"))
    best = (summary.get("best") or {}).get("test") or {}
    chosen_on = (summary.get("config") or {}).get("select_on") or run.get("select_on") or "validation"
    c[1].metric("Test F1, chosen epoch", f"{best['f1_weighted']:.2f}" if best else "—",
                help=f"The test score at the epoch chosen on {chosen_on} (epoch {summary.get('best_epoch') or '—'}): "
                     "what the heatmaps, tables and comparisons show for this run")
    on_test = summary.get("best_on_test")
    c[2].metric("Test F1, best epoch", f"{on_test:.2f}" if isinstance(on_test, (int, float)) else "—",
                help="The highest test score over the epochs (the paper's protocol: the best epoch chosen on test)")
    probe = summary.get("probe") or store.read(run_id).probe or {}
    c[3].metric("Probe F1 (before)", f"{probe['f1_weighted']:.2f}" if probe.get("f1_weighted") is not None else "—",
                help="Logistic regression on the frozen corrupted model's features, before fine-tuning")
    st.caption(f"Chosen epoch {summary.get('best_epoch') or '—'} (on {chosen_on}) · attempt {status.get('attempt') or '—'}"
               " · the solid line is test F1, the dashed one validation F1")
    if status.get("effective_state") == "failed":
        st.error(f"Failed: {status.get('error')}")
        with st.expander("Traceback"):
            st.code(status.get("traceback") or "", language="text")
    if status.get("effective_state") == "running":
        live(root, run_id)
    else:
        curves(root, run_id)
    details(store, run_id, summary, status)


def details(store: RunStore, run_id: str, summary: dict, status: dict) -> None:
    tabs = st.tabs(["Confusion matrix", "Per-class F1", "Metrics", "Config", "Status", "Log", "Files"])
    rows = store.epochs(run_id)
    with tabs[0]:
        confusion_tab(store, run_id, rows, summary)
    with tabs[1]:
        per_class = summary.get("per_class") or {}
        if per_class.get("best"):
            st.dataframe(pd.DataFrame({"class": per_class["classes"],
                                       "F1 before fine-tuning (probe)": per_class.get("probe"),
                                       "F1 at the best epoch": per_class["best"]}), hide_index=True, width="stretch")
        else:
            st.caption("Recorded by runs made since per-class recovery was added.")
    with tabs[2]:
        if rows:
            st.dataframe(pd.DataFrame([{"epoch": r["epoch"], "train loss": r["train_loss"], "lr": r.get("lr"),
                                        **{f"{s} {k}": r[s][k] for s in ("validation", "test") if s in r
                                           for k in ("accuracy", "f1_weighted", "f1_macro")},
                                        "train s": r.get("train_s"), "eval s": r.get("eval_s")} for r in rows]),
                         hide_index=True, width="stretch")
        else:
            st.caption("No finished epoch yet.")
    with tabs[3]:
        st.json(store.config(run_id) or {})
        if summary:
            st.json({k: summary[k] for k in ("corruption", "data", "params", "timing", "device", "hardware",
                                             "weight_movement", "fused_with") if k in summary})
    with tabs[4]:
        st.json({k: v for k, v in status.items() if k != "traceback"})
    with tabs[5]:
        log = store.files(run_id).log
        st.code("\n".join(log.read_text(errors="replace").splitlines()[-80:]) if log.is_file() else "(no log yet)",
                language="text")
    with tabs[6]:
        files(store, run_id)


def confusion_tab(store: RunStore, run_id: str, rows: list[dict], summary: dict) -> None:
    classes = summary.get("classes")
    if not rows or not classes:
        st.caption("Shown once the run has finished.")
        return
    if len(classes) > charts.MAX_CONFUSION_CLASSES:
        st.caption(f"{len(classes)} classes: too many for a readable matrix; the per-class F1 tab has each class's "
                   f"score, and confusion/ in the run's files holds every epoch's matrix (sparse).")
        return
    epoch = st.select_slider("Epoch", [r["epoch"] for r in rows], value=summary.get("best_epoch") or rows[-1]["epoch"])
    row = next(r for r in rows if r["epoch"] == epoch)
    matrix = store.confusion(run_id, row)
    if matrix is None:
        st.caption("This epoch's confusion matrix could not be read (a damaged file).")
        return
    st.altair_chart(charts.confusion(matrix, classes))
    st.caption("Each row is a true class; cells are the share of its examples predicted as each class.")

if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
