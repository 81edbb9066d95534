"""Failures and surprises: every convergence failure (per run: it crashed or diverged, and is left out), every
flagged run (per run, kept as a measurement: it did not learn, its seed strays from its siblings, or a file beside
its score is damaged) and every surprise (per cell: off its neighbours' trend, or above a cell with less
corruption: findings, not failures), each rule in one sentence. Pick a run to inspect it."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore.results import charts, flags
from healcore.results.keys import lr_text

COLUMNS = ["run_id", "reason", "dataset", "setting", "lr", "seed", "test_f1_weighted", "majority_f1", "state", "model"]


def main() -> None:
    common.set_up_page("Failures and surprises")
    root, runs = common.load_nonempty()
    table = common.load_cells(root)
    counts = flags.summary(runs, table)
    c = st.columns(len(counts))
    for col, (name, n) in zip(c, counts.items()):
        col.metric(name.capitalize(), n)
    with st.expander("The rules, with their thresholds", expanded=False):
        st.markdown("\n".join(f"- **{name}**: {rule}" for name, rule in flags.RULES.items()))
    shown = []
    st.subheader("Convergence failures (per run): left out")
    failed = runs[runs["failed"]] if len(runs) else runs
    if failed.empty:
        st.success("No convergence failure: no run crashed or diverged.")
    else:
        shown.append(run_table(failed, "failures", "failed-runs"))
    st.subheader("Flagged runs (per run): kept as measurements")
    flagged = runs[runs["flagged"]] if len(runs) and "flagged" in runs else runs.iloc[0:0]
    if flagged.empty:
        st.success("No flag: every run learned, no seed strays from its siblings, and every file is whole.")
    else:
        shown.append(run_table(flagged, "flags", "flagged-runs"))
    chosen = next((run_id for run_id in shown if run_id), None)
    if chosen:
        st.caption("Select a run to see its curves here; open it for everything else.")
        inspect(root, runs, chosen)
    st.subheader("Surprises (per cell): findings, not failures")
    odd = table[table["surprises"].map(bool)] if len(table) else table
    if odd.empty:
        st.success("No surprise: every cell follows its neighbours' trend, and more corruption never scored higher.")
    else:
        surprises = pd.DataFrame({
            "model": odd["model"], "dataset": odd["dataset"],
            "setting": [common.setting_label(s, l) for s, l in zip(odd["side"], odd["level"])],
            "variant": common.variant_label(odd, common.variant_keys(table)), "F1": odd["f1"], "why": odd["surprises"].map("; ".join)})
        # a static table wraps the long "why" sentences, where a data grid would cut them at its column's edge
        st.table(surprises.style.hide(axis="index").format({"F1": "{:.2f}"}))


def run_table(chosen: pd.DataFrame, column: str, key: str) -> str | None:
    """Runs with their reasons (the reason first after the run: at 1280 px a reason at the far right was
    off-screen); the selected run's id (else the first's)."""
    frame = chosen.copy()
    frame["setting"] = [common.setting_label(s, l) for s, l in zip(frame["side"], frame["level"])]
    frame["reason"] = frame[column].map("; ".join)
    frame["lr"] = frame["lr"].map(lr_text)
    frame = frame[COLUMNS]
    event = st.dataframe(frame, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                         key=key, column_config={**common.RUN_COLUMN_CONFIG,
                                                 "run_id": st.column_config.TextColumn("run", width="small"),
                                                 "majority_f1": st.column_config.NumberColumn("majority F1",
                                                                                              format="%.2f"),
                                                 "reason": st.column_config.TextColumn(width="large")})
    rows = event.selection.rows if event is not None else []
    return frame.iloc[rows[0]]["run_id"] if rows else frame.iloc[0]["run_id"]


def inspect(root: str, runs: pd.DataFrame, run_id: str) -> None:
    epochs = common.epochs_table(root, common.store_version(root), (run_id,))
    c1, c2 = st.columns(2)
    if len(epochs):
        c1.altair_chart(charts.run_curves(epochs, title=f"{run_id}: weighted F1"), width="stretch")
        c2.altair_chart(charts.loss_curve(epochs), width="stretch")
    else:
        c1.caption(f"{run_id} finished no epoch.")
    if st.button(f"Open {run_id} in Run detail", icon=":material/open_in_new:"):
        common.open_run_detail(run_id)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
