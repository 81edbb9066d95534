"""Export: the paper-style table (CSV, Markdown, LaTeX; datasets by name, the training recipe in the caption,
† convergence failures, ‡ surprises) and the tidy data as CSV."""
import io

import pandas as pd
import streamlit as st

from dashboard import common, comparing
from healcore import results
from healcore.results import compare, compare_tables


def comparison_tables(root: str, runs: pd.DataFrame, table: pd.DataFrame) -> None:
    """The comparison tables `healcore compare` writes (A / B / A − B per cell, the paper's Table 3/4 layout)."""
    st.subheader("Comparison tables")
    by = comparing.compare_by(table)
    if by is None:
        st.caption("Choose what to compare (Compare by) for its table: A / B / A − B per cell, with significance.")
        return
    chosen = comparing.choose(root, runs, table, by, whole=True)  # every experiment, a row each, as the CLI
    if chosen is None:
        return
    result = comparing.result_of(chosen)
    if result is None:
        return
    csv = compare_tables.export(result, "csv")
    st.dataframe(pd.read_csv(io.StringIO(csv), dtype=str).fillna(""), hide_index=True, width="stretch")
    st.caption(compare_tables.caption(result))
    c = st.columns(4)
    c[0].download_button("Markdown", compare_tables.export(result, "md"), "comparison.md", "text/markdown")
    c[1].download_button("LaTeX", compare_tables.export(result, "latex"), "comparison.tex", "text/x-tex")
    c[2].download_button("CSV", csv, "comparison.csv", "text/csv")
    c[3].download_button("Tidy (CSV)", compare_tables.export(result, "tidy"), "comparison-tidy.csv", "text/csv",
                         help="One row per aligned cell: its settings, A, B, each side's n and sd, A − B, the test, "
                              "p and corrected p (healcore compare --format tidy)")


def main() -> None:
    common.set_up_page("Export")
    root, runs = common.load_nonempty()
    table = common.cell_filters(common.load_cells(root))
    common.flag_banner(runs, common.load_cells(root))
    value = common.url_selectbox("Value", ["f1", "f1_macro", "accuracy", "healing", "recovery"], key="value",
                                 format_func=lambda v: compare.METRICS.get(v, v))
    st.subheader("Table 1 layout")
    caption = results.recipe_caption(runs[runs["state"] == "completed"])
    md = results.export_table1(table, "markdown", value, caption=caption)
    if md:
        csv = results.export_table1(table, "csv", value)
        st.dataframe(pd.read_csv(io.StringIO(csv), dtype=str).fillna(""), hide_index=True, width="stretch")
        st.caption(f"{caption} {results.note('csv')}")  # the marks of the table shown, which is the CSV
        c = st.columns(3)
        c[0].download_button("Markdown", md, "table1.md", "text/markdown")
        c[1].download_button("LaTeX", results.export_table1(table, "latex", value, caption=caption), "table1.tex",
                             "text/x-tex")
        c[2].download_button("CSV", csv, "table1.csv", "text/csv")
    else:
        st.caption("No re-initialisation cells yet.")
    comparison_tables(root, runs, table)
    st.subheader("Tidy data")
    c = st.columns(3)
    c[0].download_button("Runs (CSV)", runs.to_csv(index=False), "runs.csv", "text/csv")
    c[1].download_button("Cells (CSV)", table.to_csv(index=False), "cells.csv", "text/csv")
    epochs = common.epochs_table(root, common.store_version(root), tuple(runs["run_id"]))
    c[2].download_button("Epochs (CSV)", epochs.to_csv(index=False), "epochs.csv", "text/csv")


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
