"""Degradation curves: F1 against corruption level, bottom and top as two lines, seed spread as bands,
the clean model as a reference line, and the paper's three claims judged on the data on screen."""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import common
from healcore import results

ICON = {"holds": "✓ holds", "fails": "✗ does not hold", "mixed": "~ mixed", "insufficient": "? not enough data"}


def curve_frame(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.itertuples():
        sides = ["bottom", "top"] if r.side in ("clean", "all") else [r.side]
        for side in sides:
            if side in ("bottom", "top"):
                std = float(r.f1_std or 0)
                rows.append({"model": r.model, "dataset": r.dataset, "side": side, "level": 100 * r.level,
                             "f1": r.f1, "lo": r.f1 - std, "hi": r.f1 + std, "seeds": r.n_seeds,
                             "flagged": bool(r.flagged)})
    return pd.DataFrame(rows)


def chart(frame: pd.DataFrame, clean: pd.DataFrame) -> alt.Chart:
    base = alt.Chart(frame).encode(x=alt.X("level:Q", title="% of layers corrupted", scale=alt.Scale(domain=[0, 100])),
                                   color=alt.Color("side:N", scale=alt.Scale(domain=["bottom", "top"],
                                                                             range=["#d62728", "#1f77b4"])))
    band = base.mark_area(opacity=0.2).encode(y="lo:Q", y2="hi:Q")
    line = base.mark_line(point=True).encode(y=alt.Y("f1:Q", title="weighted F1"),
                                             tooltip=["side", "level", alt.Tooltip("f1:Q", format=".2f"), "seeds"])
    rule = alt.Chart(clean).mark_rule(strokeDash=[6, 3], color="gray").encode(y="f1:Q")
    return alt.layer(band, line, rule, data=frame).properties(width=280, height=220).facet(
        column=alt.Column("dataset:N", title=None), row=alt.Row("model:N", title=None))


def main() -> None:
    st.title("Degradation curves")
    root, runs = common.load()
    if runs.empty or (runs["state"] == "completed").sum() == 0:
        common.empty_store_notice(root)
        return
    table = common.cell_filters(common.cells_table(root, common.store_version(root)), "curves")
    table = table[table["method"].isin(["reinit", "-"])]
    frame = curve_frame(table)
    if frame.empty:
        st.warning("No cells match the filters.")
        return
    clean = table[table["side"] == "clean"][["model", "dataset", "f1"]]
    st.altair_chart(chart(frame, clean), width="content")
    st.caption("Bands: ± one standard deviation over seeds. Dashed line: the clean model.")
    st.subheader("The paper's claims, on this data")
    verdicts = results.claims(table)
    verdicts["verdict"] = verdicts["verdict"].map(ICON)
    st.dataframe(verdicts, hide_index=True, width="stretch")
    sig = results.bottom_vs_top_tests(runs, table)
    if len(sig):
        st.subheader("Bottom vs top: paired t-tests")
        st.dataframe(sig, hide_index=True, width="stretch")


main()
