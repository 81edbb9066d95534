"""Grid heatmaps: a metric across model x corruption setting x dataset, bottom and top side by side; or, with
"Compare by", two conditions (a setting's two values, two run stores, or a store and the paper) as A, B and A − B
with a significance test per cell. Every cell shows its convergence failures and surprises; cells still running or
queued show as such. Click a cell to list the runs behind it (both sides' when comparing); pick one to open it."""
import streamlit as st

from dashboard import common, comparing
from healcore.results import charts, compare_charts

METRICS = {"Weighted F1": "f1", "Macro F1": "f1_macro", "Accuracy": "accuracy", "Healing (F1 after - probe)": "healing",
           "Recovery ratio": "recovery", "Healing speed (epochs to reach a share of clean)": "healing_speed"}
SCALES = ["fitted to the cells shown", "fixed range"]


def metric_choice(c) -> tuple[str, str, bool, float]:
    label = common.url_selectbox("Metric", list(METRICS), key="metric", container=c[0])
    scale = common.url_selectbox("Colour scale", SCALES, key="scale", container=c[1], help=(
        "Fitted: the colours span the cells on screen, so small gaps look large. Fixed: the metric's whole range "
        "(0-100 for F1), so equal colours mean equal values across views"))
    share = 0.95
    if METRICS[label] == "healing_speed":
        share = float(common.url_selectbox("Share of the clean score", ["0.9", "0.95", "0.99"], key="share",
                                           default="0.95", container=c[1]))
        st.caption(f"Healing speed: the first epoch whose test F1 reaches {share:.0%} of the line's clean cell's F1 "
                   f"(median over seeds; dark grey: not reached within the run's epochs). From the stored per-epoch "
                   f"metrics: no extra training.")
    return label, METRICS[label], scale == SCALES[1], share


def one_condition(root: str, runs, table, label: str, metric: str, fixed: bool, share: float) -> None:
    table = common.one_variant(table)
    if metric == "healing_speed":
        table = common.with_speed(root, table, share)
    frame = charts.heatmap_frame(table, metric)
    if frame.empty:
        st.warning("No bottom/top/clean/all cells match the filters.")
        return
    if not (runs["state"] == "completed").any():
        common.nothing_scored_yet(runs)
    event = st.altair_chart(charts.heatmap(frame, label, metric=metric, fixed=fixed), on_select="rerun",
                            key="heat-chart")
    common.selected_cell(event, "heat-chart")
    st.caption("Each cell: mean over seeds at the best learning rate. Clean (0%) and all-layers (100%) cells are "
               "the references of both panels. A thick red outline (⚠): the value is kept but flagged (the model "
               "did not learn, seeds diverged at its learning rate, or a seed strays from its siblings); dashed "
               "(✕N): N runs crashed or diverged and are left out. Click a cell to list its runs (double-click "
               "clears).")
    chosen = table[table["cell_id"] == common.url_get("cell")]
    if len(chosen):
        r = chosen.iloc[0]
        common.runs_behind(runs, r["all_run_ids"], key="heat-runs",
                           title=f"Runs of {r['model']} · {r['dataset']} · {common.setting_label(r['side'], r['level'])}"
                                 f" ({r['n_failures']} with convergence failures"
                                 f"{', value flagged' if r.get('value_flagged') else ''})")


def two_conditions(root: str, runs, table, by: str, metric: str, fixed: bool, share: float) -> None:
    chosen = comparing.choose(root, runs, table, by)
    if chosen is None:
        return
    a, b = chosen.a, chosen.b
    if metric == "healing_speed":
        a, b = comparing.with_speed(a, share), comparing.with_speed(b, share)
    result = comparing.result_of(chosen, metric, a, b)
    if result is None:
        return
    frame = compare_charts.compare_frame(result)
    chart = compare_charts.compare_heatmap(frame, a.name, b.name, metric, fixed,
                                           relative=bool(result.attrs.get("relative")))
    event = st.altair_chart(chart, on_select="rerun", key="compare-chart")
    common.selected_cell(event, "compare-chart", field="align")
    st.caption(comparing.caption(result) + " Click a cell of the difference to list both sides' runs.")
    comparing.runs_of_selected(chosen, result, key="compare-runs")


def main() -> None:
    root, runs, table = common.cells_page("Grid heatmaps")
    c = st.columns([3, 2, 2])
    by = comparing.compare_by(table, container=c[0])
    label, metric, fixed, share = metric_choice(c[1:])
    if by is None:
        one_condition(root, runs, table, label, metric, fixed, share)
    else:
        two_conditions(root, runs, table, by, metric, fixed, share)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
