"""Charts of a comparison (compare.py): the A, B and A − B heatmaps, and A and B overlaid as degradation curves.

Pure functions of compare()'s table, as the other charts are of results tables; used by the pages and the report.
The difference panel uses a diverging scale centred at 0 with a symmetric range, its legend saying which colour
means "A better"; a star marks a cell whose difference stays significant after the comparison's correction.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.cell_table import both_panels
from healcore.results.charts import (BELOW, COLUMN_PX, FACET_COLUMNS, LOWER_IS_BETTER, OTHER_FAILURES, PANEL_WIDTH,
                                     SIDE_COLOURS, VALUE_FAILED, colour_domain, ink, mark_outlines)
from healcore.results.compare import METRICS
from healcore.results.keys import lr_text

VIEWS = ("A", "B", "A − B")
STAR = "★"


def compare_frame(result: pd.DataFrame) -> pd.DataFrame:
    """One row per aligned cell, side panel (clean and all-layers cells in both) and view (A, B, A − B)."""
    rows = []
    for r in result.to_dict("records"):
        model = _model_label(r)
        level = float(r["level"])
        common = {"align": r["align"], "model": str(model), "dataset": r["dataset"], "level": f"{int(round(level * 100))}%",
                  "setting": setting_label(r["side"], level), "a": r["a"], "b": r["b"], "delta": r["delta"],
                  "a_n": r["a_n"], "b_n": r["b_n"], "a_lr": lr_text(r["a_lr"]), "b_lr": lr_text(r["b_lr"]),
                  "test": r["test"], "p": r["p"], "p_adj": r["p_adj"], "status": r["status"],
                  "significant": bool(r["significant"]),
                  "a_failures": _why(r, "a"), "b_failures": _why(r, "b")}
        for panel in both_panels(r["side"]):
            for view in VIEWS:
                rows.append({**common, "panel": panel, "view": view, **_view_cell(r, view)})
    return pd.DataFrame(rows)


def _model_label(r: dict) -> str:
    """The model of an aligned cell; "A's vs B's" where they differ (two models, or the paper's beside a store's)."""
    def known(x):
        return x is not None and not (isinstance(x, float) and np.isnan(x))

    a = r.get("model_a") if known(r.get("model_a")) else r.get("model")
    b = r.get("model_b") if known(r.get("model_b")) else r.get("model")
    if known(a) and known(b) and str(a) != str(b):
        return f"{a} vs {b}"
    return str(r.get("model") if known(r.get("model")) else a)


def _why(r: dict, s: str) -> str:
    """A side's failures and flags in words, for the tooltip."""
    parts = [r[f"{s}_why_failed"], *(r.get(f"{s}_flags") or []),
             f"{r[f'{s}_other_failures']} run(s) crashed or diverged, left out" if r[f"{s}_other_failures"] else ""]
    return "; ".join(p for p in parts if p)


def _view_cell(r: dict, view: str) -> dict:
    """The value, label and outline one view shows for an aligned cell."""
    if view == "A − B":
        value = r["delta"]
        if np.isfinite(value):
            label = f"{value:+.1f}" + (STAR if r["significant"] else "")
        else:
            label = r["status"]
        flagged = bool(r.get("a_flags") or r.get("b_flags"))
        return {"value": value, "label": label, "mark": VALUE_FAILED if flagged else ""}
    s = "a" if view == "A" else "b"
    present = r["status"] != ("only in B" if s == "a" else "only in A")
    value = r[s] if present else np.nan
    flagged = bool(r.get(f"{s}_flags"))
    if not present:
        label = "absent"
    elif r[f"{s}_value_failed"]:
        label = "✕ failed"
    elif np.isfinite(value):
        label = ("⚠ " if flagged else "") + f"{value:.1f}" + (f" ✕{r[f'{s}_other_failures']}"
                                                             if r[f"{s}_other_failures"] else "")
    else:
        label = "in flight" if r[f"{s}_in_flight"] else "no score"
    mark = VALUE_FAILED if flagged else (OTHER_FAILURES if r[f"{s}_other_failures"] or r[f"{s}_value_failed"]
                                         else "")
    return {"value": value, "label": label, "mark": mark}


def _heat(frame: pd.DataFrame, title: str, colour: alt.Color, order: list[str], select: bool,
          domain: tuple | None, reverse: bool, diverging: bool = False) -> alt.FacetChart:
    if diverging:  # pale near 0, saturated at the ends
        strong = frame["value"].abs() > 0.6 * (domain[1] if domain else 1.0)
        frame = frame.assign(ink=np.where(frame["value"].isna(), "#444444", np.where(strong, "white", "black")))
    else:
        frame = frame.assign(ink=ink(frame["value"], domain, reverse))
    base = alt.Chart().encode(
        x=alt.X("level:N", sort=order, title="layers corrupted", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("dataset:N", title=None),
        tooltip=["model", "dataset", "setting", alt.Tooltip("a:Q", format=".2f", title="A"),
                 alt.Tooltip("a_n:Q", title="n (A)"), alt.Tooltip("a_lr:N", title="lr kept (A)"),
                 alt.Tooltip("b:Q", format=".2f", title="B"), alt.Tooltip("b_n:Q", title="n (B)"),
                 alt.Tooltip("b_lr:N", title="lr kept (B)"), alt.Tooltip("delta:Q", format="+.2f", title="A − B"),
                 "test", alt.Tooltip("p:Q", format=".3g"), alt.Tooltip("p_adj:Q", format=".3g", title="p corrected"),
                 "status", alt.Tooltip("a_failures:N", title="failures (A)"),
                 alt.Tooltip("b_failures:N", title="failures (B)")])
    layers = []
    pick = alt.selection_point(name="cell", fields=["align"], on="click", clear="dblclick")
    if domain is not None:
        scored = base.transform_filter("isValid(datum.value)").mark_rect().encode(color=colour)
        layers.append(scored.encode(opacity=alt.condition(pick, alt.value(1.0), alt.value(0.55))) if select
                      else scored)
    layers.append(base.transform_filter("!isValid(datum.value)").mark_rect(color="#e6e6e6"))
    if select:  # on the first layer, which exists whether or not anything is scored
        layers[0] = layers[0].add_params(pick)
    layers += [base.transform_filter(f"datum.ink == '{c}'").mark_text(fontSize=10, color=c).encode(text="label:N")
               for c in ("white", "black", "#444444")]
    layers += mark_outlines(base, frame["mark"])
    step = max(24, min(58, (COLUMN_PX - 160) // (2 * max(1, len(order)))))
    return alt.layer(*layers, data=frame).properties(width=alt.Step(step), height=alt.Step(28)).facet(
        column=alt.Column("panel:N", title=None, sort=["bottom", "top"],
                          header=alt.Header(labelExpr="datum.value + ' layers corrupted'")),
        row=alt.Row("model:N", title=None), title=alt.TitleParams(title, anchor="start", fontSize=13))


def metric_title(metric: str, relative: bool = False) -> str:
    """What a comparison's values are: the metric, or each side's share of its own clean cell."""
    return f"{METRICS[metric]}, % of own clean cell" if relative else METRICS[metric]


def compare_heatmap(frame: pd.DataFrame, a_name: str, b_name: str, metric: str, fixed: bool = False,
                    select: bool = True, relative: bool = False) -> alt.VConcatChart:
    """A, B (one colour scale, so equal colours mean equal values, its legend under B) and A − B (diverging,
    centred at 0, symmetric; blue where A is better), one under the other; a click on a difference cell selects
    it ("cell")."""
    title = metric_title(metric, relative)
    order = sorted(frame["level"].unique(), key=lambda s: int(s.rstrip("%")))
    reverse = metric in LOWER_IS_BETTER
    sides = frame[frame["view"] != "A − B"]
    domain = colour_domain(sides["value"], metric, fixed)
    scale = alt.Scale(scheme="viridis", domain=domain, clamp=True, reverse=reverse)
    gradient = dict(orient="bottom", direction="horizontal", gradientLength=180, titleLimit=0)
    delta = frame[frame["view"] == "A − B"]
    finite = delta["value"][np.isfinite(delta["value"])]
    reach = max(float(finite.abs().max()) if len(finite) else 0.0, 0.5)
    better = "A better" if not reverse else "A better (faster)"
    diff_colour = alt.Color("value:Q", title=f"A − B (blue: {better})", scale=alt.Scale(
        scheme="redblue", domain=[-reach, reach], domainMid=0, reverse=reverse),
        legend=alt.Legend(format="+.1f", **gradient))
    side_domain = tuple(domain) if domain else None
    views = [_heat(sides[sides["view"] == "A"], f"A: {a_name}", alt.Color("value:Q", scale=scale, legend=None),
                   order, False, side_domain, reverse),
             _heat(sides[sides["view"] == "B"], f"B: {b_name}",
                   alt.Color("value:Q", title=f"{title} (A and B)", scale=scale, legend=alt.Legend(format=".1f",
                                                                                                   **gradient)),
                   order, False, side_domain, reverse),
             _heat(delta, f"A − B ({STAR}: significant after correction)", diff_colour, order, select,
                   (-reach, reach) if len(finite) else None, False, diverging=True)]
    return alt.vconcat(*views, spacing=14).resolve_scale(color="independent", stroke="shared")


# ------------------------------------------------------------------------------------------ curves
def compare_curve_frame(result: pd.DataFrame, a_name: str, b_name: str) -> pd.DataFrame:
    """A and B per aligned cell with a score, in each side panel: the rows of an overlaid degradation curve."""
    rows = []
    for r in result.to_dict("records"):
        model = _model_label(r)
        for which, name in (("a", a_name), ("b", b_name)):
            value = r[which]
            if not np.isfinite(value) or r[f"{which}_value_failed"]:
                continue
            std = r[f"{which}_std"] if isinstance(r[f"{which}_std"], (int, float)) and np.isfinite(r[f"{which}_std"]) \
                else 0.0
            for side in both_panels(r["side"]):
                rows.append({"align": r["align"], "panel": f"{model} · {r['dataset']}", "side": side,
                             "condition": f"{which.upper()}: {name}", "level": 100 * float(r["level"]),
                             "setting": setting_label(r["side"], float(r["level"])), "value": value,
                             "lo": value - std, "hi": value + std, "n": r[f"{which}_n"],
                             "delta": r["delta"], "test": r["test"], "p_adj": r["p_adj"]})
    return pd.DataFrame(rows)


def compare_curves(frame: pd.DataFrame, metric: str, select: bool = True, relative: bool = False) -> alt.FacetChart:
    """Per model and dataset: A solid, B dashed, bottom red and top blue, each with its ± std band."""
    x = alt.X("level:Q", title="% of layers corrupted", scale=alt.Scale(domain=[0, 100]))
    y = alt.Y("value:Q", title=metric_title(metric, relative), scale=alt.Scale(zero=False))
    colour = alt.Color("side:N", scale=SIDE_COLOURS, title="corrupted from the", legend=BELOW)
    conditions = sorted(frame["condition"].unique())
    dash = alt.StrokeDash("condition:N", title="condition", legend=alt.Legend(
        orient="bottom", direction="vertical", labelLimit=0, symbolStrokeWidth=2.5, symbolSize=300),
        scale=alt.Scale(domain=conditions, range=[[1, 0], [6, 4]]))
    tooltip = ["condition", "setting", alt.Tooltip("value:Q", format=".2f", title=metric_title(metric, relative)), "n",
               alt.Tooltip("delta:Q", format="+.2f", title="A − B"), "test",
               alt.Tooltip("p_adj:Q", format=".3g", title="p corrected")]
    band = alt.Chart().mark_area(opacity=0.12).encode(
        x=x, y="lo:Q", y2="hi:Q", color=alt.Color("side:N", scale=SIDE_COLOURS, legend=None), detail="condition:N")
    line = alt.Chart().mark_line(strokeWidth=2).encode(x=x, y=y, color=colour, strokeDash=dash, detail="condition:N")
    points = alt.Chart().mark_point(filled=True, size=50).encode(
        x=x, y=y, color=colour,
        shape=alt.Shape("condition:N", scale=alt.Scale(domain=conditions, range=["circle", "triangle-up"]),
                        legend=None), tooltip=tooltip)
    if select:
        pick = alt.selection_point(name="cell", fields=["align"], on="click", clear="dblclick")
        points = points.add_params(pick)
    # the line first: its legend is the one drawn (the band's would be pale)
    return alt.layer(line, points, band, data=frame).properties(width=PANEL_WIDTH, height=190).facet(
        facet=alt.Facet("panel:N", title=None), columns=FACET_COLUMNS)
