"""Altair charts shared by the dashboard pages and `healcore report` (which saves them as PNG).

Each chart is a pure function of a tidy table from results.py; no Streamlit, no torch.
"""
from __future__ import annotations

import altair as alt
import pandas as pd

SIDE_COLOURS = alt.Scale(domain=["bottom", "top"], range=["#d62728", "#1f77b4"])


def setting_label(side: str, level: float) -> str:
    if side == "clean":
        return "clean (0%)"
    if side == "all":
        return "all (100%)"
    return f"{side} {int(round(level * 100))}%"


def heatmap_frame(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per (model, dataset, side panel, level); clean and all-layers cells appear in both panels."""
    rows = []
    for r in table.itertuples():
        panels = ["bottom", "top"] if r.side in ("clean", "all") else [r.side]
        for panel in panels:
            if panel not in ("bottom", "top"):
                continue
            rows.append({"model": r.model, "dataset": r.dataset, "panel": panel,
                         "level": f"{int(round(r.level * 100))}%", "setting": setting_label(r.side, r.level),
                         "value": getattr(r, value), "std": r.f1_std, "seeds": r.n_seeds, "lr": r.lr,
                         "flagged": bool(r.flagged), "why": "; ".join(r.flags) if r.flags else ""})
    return pd.DataFrame(rows)


def heatmap(frame: pd.DataFrame, title: str) -> alt.FacetChart:
    order = sorted(frame["level"].unique(), key=lambda s: int(s.rstrip("%")))
    base = alt.Chart(frame).encode(
        x=alt.X("level:N", sort=order, title="layers corrupted"), y=alt.Y("dataset:N", title=None),
        tooltip=["model", "dataset", "setting", alt.Tooltip("value:Q", format=".2f", title=title),
                 alt.Tooltip("std:Q", format=".2f"), "seeds", "lr", "why"])
    rect = base.mark_rect().encode(color=alt.Color("value:Q", title=title, scale=alt.Scale(scheme="viridis")))
    text = base.mark_text(fontSize=11).encode(text=alt.Text("value:Q", format=".1f"), color=alt.value("white"))
    flagged = base.transform_filter("datum.flagged").mark_rect(filled=False, stroke="red", strokeWidth=3,
                                                               strokeDash=[4, 2])
    return (rect + text + flagged).properties(width=260, height=alt.Step(28)).facet(
        column=alt.Column("panel:N", title=None, sort=["bottom", "top"]), row=alt.Row("model:N", title=None))


def curve_frame(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.itertuples():
        for side in (["bottom", "top"] if r.side in ("clean", "all") else [r.side]):
            if side in ("bottom", "top"):
                std = float(r.f1_std or 0)
                rows.append({"model": r.model, "dataset": r.dataset, "side": side, "level": 100 * r.level,
                             "f1": r.f1, "lo": r.f1 - std, "hi": r.f1 + std, "seeds": r.n_seeds,
                             "flagged": bool(r.flagged)})
    return pd.DataFrame(rows)


def degradation_curves(frame: pd.DataFrame, clean: pd.DataFrame) -> alt.FacetChart:
    """F1 against % of layers corrupted, bottom and top lines, ± std bands, dashed clean reference."""
    base = alt.Chart().encode(x=alt.X("level:Q", title="% of layers corrupted", scale=alt.Scale(domain=[0, 100])),
                              color=alt.Color("side:N", scale=SIDE_COLOURS))
    band = base.mark_area(opacity=0.2).encode(y="lo:Q", y2="hi:Q")
    line = base.mark_line(point=True).encode(y=alt.Y("f1:Q", title="weighted F1", scale=alt.Scale(zero=False)),
                                             tooltip=["side", "level", alt.Tooltip("f1:Q", format=".2f"), "seeds"])
    frame = frame.merge(clean.rename(columns={"f1": "clean_f1"}), on=["model", "dataset"], how="left")
    rule = alt.Chart().mark_rule(strokeDash=[6, 3], color="gray").encode(y="mean(clean_f1):Q")
    return alt.layer(band, line, rule, data=frame).properties(width=260, height=200).facet(
        column=alt.Column("dataset:N", title=None), row=alt.Row("model:N", title=None))


def line_over(frame: pd.DataFrame, x: str, y: str, colour: str, x_title: str, y_title: str) -> alt.Chart:
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x_title), y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=f"{colour}:N", tooltip=[colour, x, alt.Tooltip(f"{y}:Q", format=".2f")]).properties(width=420, height=260)


def embedding_panels(frame: pd.DataFrame, order: list[str], columns: int = 4) -> alt.FacetChart:
    """Small multiples of 2-D projections, one panel per setting, points coloured by label."""
    return alt.Chart(frame).mark_circle(size=14, opacity=0.7).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("label:N", title="label", scale=alt.Scale(scheme="tableau10")),
        tooltip=["label"]).properties(width=230, height=230).facet(
        facet=alt.Facet("panel:N", title=None, sort=order), columns=columns).resolve_scale(
        x="independent", y="independent")


def confusion(matrix: list[list[int]], classes: list[str]) -> alt.LayerChart:
    rows = [{"true": classes[i], "predicted": classes[j], "count": v}
            for i, row in enumerate(matrix) for j, v in enumerate(row)]
    base = alt.Chart(pd.DataFrame(rows)).encode(x=alt.X("predicted:N", sort=classes), y=alt.Y("true:N", sort=classes))
    size = min(420, 40 * len(classes) + 80)
    return (base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"))) +
            base.mark_text().encode(text="count:Q")).properties(width=size, height=size)
