"""Degradation curves: F1 against corruption level, bottom and top as two lines, seed spread as bands,
the clean model as a reference line, the paper's three claims judged on the data on screen, and whether the
clean models trained long enough to plateau (the reference the claims lean on)."""
import streamlit as st

from dashboard import common
from healcore import charts, results

ICON = {"holds": "✓ holds", "fails": "✗ does not hold", "mixed": "~ mixed", "insufficient": "? not enough data"}


def main() -> None:
    st.title("Degradation curves")
    root, runs = common.load_nonempty(completed=True)
    table = common.cell_filters(common.cells_table(root, common.store_version(root)), "curves")
    table = table[table["method"].isin(["reinit", "-"])]
    table = common.one_variant(table, "curves", methods=False)
    frame = charts.curve_frame(table)
    if frame.empty:
        st.warning("No cells match the filters.")
        return
    clean = table[table["side"] == "clean"][["model", "dataset", "f1"]]
    st.altair_chart(charts.degradation_curves(frame, clean), width="content")
    st.caption("Bands: ± one standard deviation over seeds. Dashed line: the clean model.")
    st.subheader("The paper's claims, on this data")
    verdicts = results.claims(table)
    verdicts["verdict"] = verdicts["verdict"].map(ICON)
    st.dataframe(verdicts, hide_index=True, width="stretch")
    clean_ids = tuple(results.clean_run_ids(table))
    flat = results.plateau(table, common.epochs_table(root, common.store_version(root), clean_ids))
    if len(flat):
        st.subheader("Did the clean models plateau?")
        st.dataframe(flat, hide_index=True, width="stretch")
        rising = flat[flat["verdict"] == "still rising"]
        if len(rising):
            st.warning("The clean model was still rising at the last epoch on " + ", ".join(
                f"{r.dataset} ({r.model})" for r in rising.itertuples()) + ": the claims there compare against an "
                "under-trained reference; more epochs could change them.")
    sig = results.bottom_vs_top_tests(runs, table)
    if len(sig):
        st.subheader("Bottom vs top: paired t-tests")
        st.dataframe(sig, hide_index=True, width="stretch")


main()
