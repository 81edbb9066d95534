"""Export: the paper-style table (CSV, Markdown, LaTeX) and the tidy data as CSV."""
import streamlit as st

from dashboard import common
from healcore import results


def main() -> None:
    st.title("Export")
    root, runs = common.load_nonempty()
    table = common.cell_filters(common.cells_table(root, common.store_version(root)), "export")
    value = st.selectbox("Value", ["f1", "f1_macro", "accuracy", "healing", "recovery"])
    st.subheader("Table 1 layout")
    md = results.export_table1(table, "markdown", value)
    if md:
        st.markdown(md)
        c = st.columns(3)
        c[0].download_button("Markdown", md, "table1.md", "text/markdown")
        c[1].download_button("LaTeX", results.export_table1(table, "latex", value), "table1.tex", "text/x-tex")
        c[2].download_button("CSV", results.export_table1(table, "csv", value), "table1.csv", "text/csv")
    else:
        st.caption("No re-initialisation cells yet.")
    st.subheader("Tidy data")
    c = st.columns(3)
    c[0].download_button("Runs (CSV)", runs.to_csv(index=False), "runs.csv", "text/csv")
    c[1].download_button("Cells (CSV)", table.to_csv(index=False), "cells.csv", "text/csv")
    epochs = common.epochs_table(root, common.store_version(root), tuple(runs["run_id"]))
    c[2].download_button("Epochs (CSV)", epochs.to_csv(index=False), "epochs.csv", "text/csv")


main()
