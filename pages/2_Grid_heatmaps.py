"""Grid heatmaps: a metric across model x corruption setting x dataset, bottom and top side by side."""
import streamlit as st

from dashboard import common
from healcore import charts

METRICS = {"Weighted F1": "f1", "Macro F1": "f1_macro", "Accuracy": "accuracy", "Healing (F1 after - probe)": "healing",
           "Recovery ratio": "recovery"}


def main() -> None:
    st.title("Grid heatmaps")
    root, runs = common.load_nonempty(completed=True)
    table = common.cell_filters(common.cells_table(root, common.store_version(root)), "heat")
    table = common.one_variant(table, "heat")
    label = st.selectbox("Metric", list(METRICS))
    frame = charts.heatmap_frame(table, METRICS[label])
    if frame.empty:
        st.warning("No bottom/top/clean/all cells match the filters.")
        return
    st.altair_chart(charts.heatmap(frame, label), width="content")
    n_flag = int(frame.drop_duplicates(["model", "dataset", "setting"])["flagged"].sum())
    st.caption(f"Each cell: mean over seeds at the best learning rate. Clean (0%) and all-layers (100%) cells are "
               f"shown in both panels as references. Red dashed outline: flagged cell ({n_flag} here; reasons on "
               f"hover and on the Outliers page).")


main()
