"""Grid heatmaps: a metric across model x corruption setting x dataset, bottom and top side by side."""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import common

METRICS = {"Weighted F1": "f1", "Macro F1": "f1_macro", "Accuracy": "accuracy", "Healing (F1 after - probe)": "healing",
           "Recovery ratio": "recovery"}


def heatmap_frame(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per (model, dataset, side panel, level); clean and all-layers cells appear in both panels."""
    rows = []
    for r in table.itertuples():
        panels = ["bottom", "top"] if r.side in ("clean", "all") else [r.side]
        for panel in panels:
            if panel not in ("bottom", "top"):
                continue
            rows.append({"model": r.model, "dataset": r.dataset, "panel": panel, "level": f"{int(round(r.level * 100))}%",
                         "setting": common.setting_label(r.side, r.level), "value": getattr(r, value),
                         "std": r.f1_std, "seeds": r.n_seeds, "lr": r.lr, "flagged": bool(r.flagged),
                         "why": "; ".join(r.flags) if r.flags else ""})
    return pd.DataFrame(rows)


def chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    order = sorted(frame["level"].unique(), key=lambda s: int(s.rstrip("%")))
    base = alt.Chart(frame).encode(
        x=alt.X("level:N", sort=order, title="layers corrupted"),
        y=alt.Y("dataset:N", title=None),
        tooltip=["model", "dataset", "setting", alt.Tooltip("value:Q", format=".2f", title=title),
                 alt.Tooltip("std:Q", format=".2f"), "seeds", "lr", "why"])
    rect = base.mark_rect().encode(color=alt.Color("value:Q", title=title, scale=alt.Scale(scheme="viridis")))
    text = base.mark_text(fontSize=11).encode(text=alt.Text("value:Q", format=".1f"),
                                              color=alt.value("white"))
    flagged = base.transform_filter("datum.flagged").mark_rect(filled=False, stroke="red", strokeWidth=3,
                                                               strokeDash=[4, 2])
    return (rect + text + flagged).properties(width=260, height=alt.Step(28)).facet(
        column=alt.Column("panel:N", title=None, sort=["bottom", "top"]), row=alt.Row("model:N", title=None))


def main() -> None:
    st.title("Grid heatmaps")
    root, runs = common.load()
    if runs.empty or (runs["state"] == "completed").sum() == 0:
        common.empty_store_notice(root)
        return
    table = common.cell_filters(common.cells_table(root, common.store_version(root)), "heat")
    label = st.selectbox("Metric", list(METRICS))
    frame = heatmap_frame(table, METRICS[label])
    if frame.empty:
        st.warning("No bottom/top/clean/all cells match the filters.")
        return
    st.altair_chart(chart(frame, label), width="content")
    n_flag = int(frame.drop_duplicates(["model", "dataset", "setting"])["flagged"].sum())
    st.caption(f"Each cell: mean over seeds at the best learning rate. Clean (0%) and all-layers (100%) cells are "
               f"shown in both panels as references. Red dashed outline: flagged cell ({n_flag} here; reasons on "
               f"hover and on the Outliers page).")


main()
