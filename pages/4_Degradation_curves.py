"""Degradation curves: F1 against corruption level, bottom and top as two lines, seed spread as bands, the clean
model as a reference line; the paper's three claims judged on the data on screen, and whether the clean models
trained long enough to plateau (the reference the claims lean on). Click a point for the runs behind it."""
import streamlit as st

from dashboard import common
from healcore import results
from healcore.results import charts

ICON = {"holds": "✓ holds", "fails": "✗ does not hold", "mixed": "~ mixed", "insufficient": "? not enough data",
        results.REFERENCE_FAILED: "⚠ not judged: the clean cell failed"}


def main() -> None:
    common.set_up_page("Degradation curves")
    root, runs = common.load_nonempty()
    table = common.load_cells(root)
    common.flag_banner(runs, table)
    table = results.reinit_only(common.cell_filters(table, "curves"))
    table = common.one_variant(table, "curves", methods=False)
    frame = charts.curve_frame(table)
    if frame.empty:
        if not (runs["state"] == "completed").any():
            common.nothing_scored_yet(runs)
        else:
            st.warning("No cells match the filters.")
        return
    clean = results.scored(table)
    clean = clean[clean["side"] == "clean"][["model", "dataset", "f1"]]
    event = st.altair_chart(charts.degradation_curves(frame, clean), on_select="rerun", key="curve-chart")
    common.selected_cell(event, "curve-chart")
    st.caption("Bands: ± one standard deviation over seeds. Click a point to list its runs (double-click clears).")
    chosen = table[table["cell_id"] == common.url_get("cell")]
    if len(chosen):
        r = chosen.iloc[0]
        common.runs_behind(runs, r["all_run_ids"], key="curve-runs",
                           title=f"Runs of {r['model']} · {r['dataset']} · {common.setting_label(r['side'], r['level'])}")
    st.subheader("The paper's claims, on this data")
    verdicts = results.claims(table)
    verdicts["verdict"] = verdicts["verdict"].map(ICON)
    st.dataframe(verdicts, hide_index=True, width="stretch",
                 column_config={"evidence": st.column_config.TextColumn(width="large")})
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
