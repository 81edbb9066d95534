"""Outliers: every flagged run with its reason, its curves and its confusion matrix."""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import common
from healcore import charts
from healcore.store import RunStore


def main() -> None:
    st.title("Outliers")
    root, runs = common.load_nonempty()
    table = common.cells_table(root, common.store_version(root))
    run_flags = runs[runs["flagged"]][["run_id", "model", "dataset", "side", "level", "lr", "seed", "state",
                                       "test_f1_weighted", "majority_f1", "flags"]]
    cell_flags = table[table["flagged"]] if len(table) else table
    trend = [(rid, f) for r in cell_flags.itertuples() for f in r.flags if f.startswith("off trend")
             for rid in r.run_ids]
    st.metric("Flagged runs", len(run_flags) + len({rid for rid, _ in trend}))
    if run_flags.empty and not trend:
        st.success("No run is flagged: no collapse to one class, no flat or NaN loss, no cell off its trend.")
        return
    flat = run_flags.assign(reason=run_flags["flags"].map("; ".join)).drop(columns=["flags"])
    if trend:
        extra = runs[runs["run_id"].isin([rid for rid, _ in trend])][["run_id", "model", "dataset", "side", "level",
                                                                        "lr", "seed", "state", "test_f1_weighted",
                                                                        "majority_f1"]]
        extra["reason"] = extra["run_id"].map(dict(trend))
        flat = pd.concat([flat, extra], ignore_index=True)
    st.dataframe(flat, hide_index=True, width="stretch")
    run_id = st.selectbox("Inspect", flat["run_id"].tolist())
    if run_id:
        summary = RunStore(root).summary(run_id) or {}
        epochs = common.epochs_table(root, common.store_version(root), (run_id,))
        c1, c2 = st.columns(2)
        if len(epochs):
            c1.altair_chart(alt.Chart(epochs).mark_line(point=True).encode(x="epoch:Q", y="test_f1_weighted:Q"),
                            width="stretch")
            c1.altair_chart(alt.Chart(epochs).mark_line(point=True, color="orange").encode(x="epoch:Q", y="train_loss:Q"),
                            width="stretch")
        rows = RunStore(root).epochs(run_id)
        best = next((r for r in rows if r["epoch"] == summary.get("best_epoch")), rows[-1] if rows else None)
        if best and summary.get("classes"):
            c2.caption(f"Confusion matrix (test, epoch {best['epoch']})")
            c2.altair_chart(charts.confusion(best["test"]["confusion"], summary["classes"]))
        st.page_link(common.page("Run detail"), label=f"Open {run_id} in Run detail", query_params={"run": run_id})


main()
