"""Grid heatmaps: a metric across model x corruption setting x dataset, bottom and top side by side. Every cell
shows its convergence failures (any learning rate or seed) and surprises; cells still running or queued show as
such. Click a cell to list the runs behind it; pick a run to open it."""
import streamlit as st

from dashboard import common
from healcore.results import charts

METRICS = {"Weighted F1": "f1", "Macro F1": "f1_macro", "Accuracy": "accuracy", "Healing (F1 after - probe)": "healing",
           "Recovery ratio": "recovery"}


def main() -> None:
    common.set_up_page("Grid heatmaps")
    root, runs = common.load_nonempty()
    table = common.load_cells(root)
    common.flag_banner(runs, table)
    table = common.one_variant(common.cell_filters(table, "heat"), "heat")
    label = common.url_selectbox("Metric", list(METRICS), key="metric")
    frame = charts.heatmap_frame(table, METRICS[label])
    if frame.empty:
        st.warning("No bottom/top/clean/all cells match the filters.")
        return
    if not (runs["state"] == "completed").any():
        common.nothing_scored_yet(runs)
    event = st.altair_chart(charts.heatmap(frame, label), on_select="rerun", key="heat-chart")
    common.selected_cell(event, "heat-chart")
    st.caption("Each cell: mean over seeds at the best learning rate. Clean (0%) and all-layers (100%) cells are "
               "the references of both panels. Click a cell to list its runs (double-click clears).")
    chosen = table[table["cell_id"] == common.url_get("cell")]
    if len(chosen):
        r = chosen.iloc[0]
        common.runs_behind(runs, r["all_run_ids"], key="heat-runs",
                           title=f"Runs of {r['model']} · {r['dataset']} · {common.setting_label(r['side'], r['level'])}"
                                 f" ({r['n_failures']} with convergence failures)")


main()
