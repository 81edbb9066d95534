"""Failures and surprises: every convergence failure (per run: failed or NaN, damaged files, collapsed to the
majority class, loss not falling, a seed far from its siblings) and every surprise (per cell: off its
neighbours' trend, or above a cell with less corruption: findings, not failures). Pick a run to inspect it."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore.results import charts, flags
from healcore.results.keys import lr_text


def main() -> None:
    common.set_up_page("Failures and surprises")
    root, runs = common.load_nonempty()
    table = common.load_cells(root)
    counts = flags.summary(runs, table)
    c = st.columns(3)
    for col, (name, n) in zip(c, counts.items()):
        col.metric(name.capitalize(), n)
    st.subheader("Convergence failures (per run)")
    failed = runs[runs["failed"]].copy()
    if failed.empty:
        st.success("No convergence failure: no run failed, collapsed to one class, kept a flat loss, lost a file, "
                   "or strayed from its sibling seeds.")
    else:
        failed["setting"] = [common.setting_label(s, l) for s, l in zip(failed["side"], failed["level"])]
        failed["reason"] = failed["failures"].map("; ".join)
        failed["lr"] = failed["lr"].map(lr_text)
        # the reason first after the run: at 1280 px a reason at the far right was off-screen
        shown = failed[["run_id", "reason", "dataset", "setting", "lr", "seed", "test_f1_weighted", "majority_f1",
                        "state", "model"]]
        event = st.dataframe(shown, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                             key="failed-runs", column_config={**common.RUN_COLUMN_CONFIG,
                                                               "run_id": st.column_config.TextColumn("run", width="small"),
                                                               "majority_f1": st.column_config.NumberColumn(
                                                                   "majority F1", format="%.2f"),
                                                               "reason": st.column_config.TextColumn(width="large")})
        st.caption("Select a run to see its curves here; open it for everything else.")
        rows = event.selection.rows if event is not None else []
        run_id = shown.iloc[rows[0]]["run_id"] if rows else shown.iloc[0]["run_id"]
        inspect(root, runs, run_id)
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


main()
