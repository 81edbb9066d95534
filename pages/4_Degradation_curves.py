"""Degradation curves: F1 against corruption level, bottom and top as two lines, seed spread as bands, the clean
model as a reference line; the paper's three claims judged on the data on screen, and whether the clean models
trained long enough to plateau (the reference the claims lean on). With "Compare by", two conditions overlaid
(A solid, B dashed) and the claims judged on each. Click a point for the runs behind it. Below: healing against
training-set size, where a store holds one setting at several `max_train` caps."""
import pandas as pd
import streamlit as st

from dashboard import common, comparing
from healcore import results
from healcore.core.config import CORRUPTION_FIELDS
from healcore.results import charts, compare_charts, data_size

ICON = {"holds": "✓ holds", "fails": "✗ does not hold", "mixed": "~ mixed", "insufficient": "? not enough data",
        results.REFERENCE_FAILED: "⚠ not judged: the clean cell failed"}


def one_condition(root: str, runs, table) -> None:
    table = common.one_variant(table, exclude=CORRUPTION_FIELDS)
    frame = charts.curve_frame(table)
    if frame.empty:
        if not (runs["state"] == "completed").any():
            common.nothing_scored_yet(runs)
        else:
            st.warning("No cells match the filters.")
        return
    event = st.altair_chart(charts.degradation_curves(frame), on_select="rerun", key="curve-chart")
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


def healing_with_data_size(runs, table) -> None:
    """Each corruption setting measured at several training-set sizes (max_train): its F1, healing or deficit to
    the clean model against the rows it trained on. Every kind of damage and of training is a series of its own."""
    table = common.one_variant(table, exclude=(*CORRUPTION_FIELDS, data_size.SIZE, "train_layers"),
                               key="size-variant")
    points = data_size.size_points(table)
    if points.empty:
        return
    st.subheader("Healing against training-set size")
    outcome = common.url_selectbox("Show", list(data_size.OUTCOMES), key="size-outcome",
                                   format_func=data_size.OUTCOMES.get)
    event = st.altair_chart(charts.size_curves(points, outcome, data_size.OUTCOMES[outcome]), on_select="rerun",
                            key="size-chart")
    common.selected_cell(event, "size-chart")
    st.caption("One line per corruption setting, each point a cell (its kept learning rate, mean over seeds) at one "
               "max_train cap, placed at the rows it trained on (after the cap and the validation carve-out); error "
               "bars: ± one standard deviation over seeds. Healing: F1 minus the damage probe's before fine-tuning; "
               "deficit: the clean cell's F1 at the same size minus this cell's. Click a point for its runs.")
    st.dataframe(data_size.size_table(points, outcome), hide_index=True, width="stretch")
    chosen = points[points["cell_id"] == common.url_get("cell")]
    if len(chosen):
        r = chosen.iloc[0]
        common.runs_behind(runs, r["run_ids"], key="size-runs",
                           title=f"Runs of {r['panel']} · {r['series']} · {int(r['train_rows']):,} training rows")


def two_conditions(root: str, runs, table, by: str) -> None:
    chosen = comparing.choose(root, runs, table, by)
    if chosen is None:
        return
    result = comparing.result_of(chosen)
    if result is None:
        return
    frame = compare_charts.compare_curve_frame(result, chosen.a.name, chosen.b.name)
    if frame.empty:
        st.warning("Neither side has a scored cell under these filters.")
        return
    metric = "f1"
    chart = compare_charts.compare_curves(frame, metric, relative=bool(result.attrs.get("relative")))
    event = st.altair_chart(chart, on_select="rerun", key="compare-curves")
    common.selected_cell(event, "compare-curves", field="align")
    st.caption("A solid, B dashed; bands: ± one standard deviation over seeds; cells with no measurement (every run "
               "crashed or diverged) are left out, flagged values (⚠) are drawn. " + comparing.caption(result) + " Click a point to list both sides' runs.")
    comparing.runs_of_selected(chosen, result, key="compare-curve-runs")
    st.subheader("The paper's claims, on A and on B")
    verdicts = [results.claims(results.reinit_only(side.cells)).assign(side=name)
                for side, name in ((chosen.a, "A"), (chosen.b, "B"))]
    both = pd.concat(verdicts)
    if len(both):
        both["verdict"] = both["verdict"].map(ICON)
        wide = both.pivot_table(index=["dataset", "claim"], columns="side", values="verdict", aggfunc="first")
        st.dataframe(wide.reset_index().rename(columns={"A": f"A: {chosen.a.name}", "B": f"B: {chosen.b.name}"}),
                     hide_index=True, width="stretch")


def main() -> None:
    root, runs, filtered = common.cells_page("Degradation curves")
    table = results.reinit_only(filtered)
    by = comparing.compare_by(table)
    if by is None:
        one_condition(root, runs, table)
        healing_with_data_size(runs, filtered)
    else:
        two_conditions(root, runs, table, by)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
