"""Altair charts shared by the dashboard pages and `healcore report` (which saves them as PNG).

Each chart is a pure function of a tidy table from healcore.results; no Streamlit, no torch. Every chart has a real
legend (sides, the two kinds of flag, classes), integer epoch ticks and axis titles in words, and keeps its
width inside a dashboard column: faceted charts wrap (at most `FACET_COLUMNS` panels a row) instead of
growing sideways. Charts a user can click carry a point selection named after what a click picks ("cell").
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.cell_table import both_panels, line_names
from healcore.results.keys import lr_text, side_rank

SIDE_COLOURS = alt.Scale(domain=["bottom", "top"], range=["#d62728", "#1f77b4"])
FAILURE = "convergence failure (✕ runs)"
VALUE_FAILED = "thick: a flagged value (⚠), kept"
OTHER_FAILURES = "dashed: runs that failed (✕N), left out"
IN_FLIGHT = "running or queued"
NOT_REACHED = "not reached"
SURPRISE = "surprise: a finding, not a failure"
MARKS = [VALUE_FAILED, OTHER_FAILURES, IN_FLIGHT]
MARK_STROKES = alt.Scale(domain=MARKS, range=["#d62728", "#d62728", "#7f7f7f"])
FACET_COLUMNS = 3  # panels per row in wrapped small multiples (fits a 1280-px-wide window with the sidebar)
PANEL_WIDTH = 210  # px per small-multiple panel
# The main column of the wide layout at 1280 px with the sidebar open is about 820 px; charts are sized to fit it
# with their legends below them.
COLUMN_PX = 780
BELOW = alt.Legend(orient="bottom", direction="vertical", labelLimit=0)
MAX_COLOURED_CLASSES = 20  # beyond this, the largest classes keep a colour and the rest are "other"
MAX_CONFUSION_CLASSES = 60  # beyond this a confusion matrix is no longer readable as a picture
# the fixed colour range of each heatmap metric (the other choice fits the cells on screen)
FIXED_DOMAINS = {"f1": (0, 100), "f1_macro": (0, 100), "accuracy": (0, 100), "healing": (-50, 100),
                 "recovery": (-0.5, 1.5), "healing_speed": (1, 10)}
LOWER_IS_BETTER = {"healing_speed"}


def _cell_status(r) -> str:
    running, queued = int(r.n_running or 0), int(r.n_queued or 0)
    if running:
        done = getattr(r, "progress", np.nan)
        return f"running {int(round(100 * done))}%" if isinstance(done, float) and np.isfinite(done) else "running"
    if queued:
        return "queued"
    if int(r.n_failures or 0) and not np.isfinite(r.f1):
        return "failed"
    return ""


def failure_mark(value_flagged: bool, failures: int, status: str) -> str:
    """The outline a heatmap cell gets: its shown value is flagged (kept); runs crashed or diverged (left out); in
    flight; or none."""
    if value_flagged:
        return VALUE_FAILED
    if failures:
        return OTHER_FAILURES
    if status.startswith(("running", "queued")):
        return IN_FLIGHT
    return ""


def mark_outlines(base: alt.Chart, marks: pd.Series) -> list[alt.Chart]:
    """The outline layers of the marks present, one legend listing those only: thick red where the value shown is
    a failure, dashed red where other runs of the cell failed, grey while in flight. (Vega-Lite draws a rect's
    dash from a mark property only, so the dashed outline is a layer of its own on the same stroke scale.)"""
    present = [m for m in MARKS if (marks == m).any()]
    stroke = alt.Stroke("mark:N", title="marks", legend=BELOW, scale=alt.Scale(
        domain=present, range=[MARK_STROKES.range[MARKS.index(m)] for m in present]))
    layers = []
    for kind, props in ((VALUE_FAILED, {"strokeWidth": 3.5}), (OTHER_FAILURES, {"strokeWidth": 2, "strokeDash": [3, 3]}),
                        (IN_FLIGHT, {"strokeWidth": 2.5})):
        if kind in present:
            layers.append(base.transform_filter(f"datum.mark == '{kind}'").mark_rect(filled=False, **props).encode(
                stroke=stroke))
    return layers


# ------------------------------------------------------------------------------------------ heatmap
def heatmap_frame(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per (model, dataset, side panel, level); clean and all-layers cells appear in both panels; cells
    without a score yet (running, queued, failed) are rows too, so a grid never shows gaps."""
    rows = []
    for r in table.itertuples():
        for panel in both_panels(r.side):
            number = getattr(r, value, np.nan)
            number = float(number) if number is not None and not pd.isna(number) else np.nan
            status = _cell_status(r)
            why = "; ".join(r.failures) if r.failures else ""
            if value == "recovery" and getattr(r, "reference_failed", "") and not status:
                status = "no reference"  # measured against a collapsed clean cell: not a ratio
                why = "; ".join(x for x in (why, r.reference_failed) if x)
            if np.isinf(number):
                status = NOT_REACHED
            value_failed = bool(getattr(r, "value_failed", False))
            flagged = bool(getattr(r, "value_flagged", False))
            if flagged:
                why = "; ".join(x for x in (why, *(getattr(r, "value_flags", None) or [])) if x)
            rows.append({
                "cell_id": r.cell_id, "model": r.model, "dataset": r.dataset,
                "dataset_path": getattr(r, "dataset_path", r.dataset), "panel": panel,
                "level": f"{int(round(r.level * 100))}%", "level_order": float(r.level),
                "setting": setting_label(r.side, r.level), "value": number if np.isfinite(number) else np.nan,
                "std": r.f1_std, "seeds": int(r.n_seeds), "lr": lr_text(r.lr), "runs": int(r.n_runs),
                "failures": int(r.n_failures), "why_failed": why, "value_failed": flagged,
                "mark": failure_mark(flagged, int(r.n_failures), status),
                "surprise": bool(r.surprises), "why_surprising": "; ".join(r.surprises) if r.surprises else "",
                "status": status})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["label"] = [_cell_text(v, f, vf, s) for v, f, vf, s in
                          zip(frame["value"], frame["failures"], frame["value_failed"], frame["status"])]
    return frame


def _cell_text(value: float, failures: int, flagged: bool, status: str) -> str:
    """A cell's label: its value (⚠ where flagged, but kept), or its status; ✕N: N runs crashed or diverged."""
    text = f"{value:.1f}" if np.isfinite(value) else status
    if flagged and np.isfinite(value):
        text = f"⚠ {text}"
    if failures:
        text += f" ✕{failures}"
    return text


def ink(values: pd.Series, domain: tuple[float, float] | None, reverse: bool = False) -> pd.Series:
    """Black or white text for each cell's colour on viridis (dark at the low end, yellow at the high end)."""
    lo, hi = domain if domain else (values.min(), values.max())
    shade = (values - lo) / (hi - lo) if hi > lo else pd.Series(0.5, index=values.index)
    shade = 1 - shade if reverse else shade
    return pd.Series(np.where(values.isna(), "#444444", np.where(shade > 0.6, "black", "white")), index=values.index)


def colour_domain(values: pd.Series, metric: str, fixed: bool) -> list[float] | None:
    """The colour scale's range: the metric's fixed range, or the cells on screen (padded when they are one
    value, so the legend never reads 74.211485 or NaN). None when nothing is scored."""
    finite = values[np.isfinite(values)]
    if fixed and metric in FIXED_DOMAINS:
        lo, hi = FIXED_DOMAINS[metric]
        return [min(lo, float(finite.min())) if len(finite) else lo, max(hi, float(finite.max())) if len(finite) else hi]
    if finite.empty:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.0 if hi > lo else max(1.0, abs(lo) * 0.01)
    return [lo - pad, hi + pad]


def heatmap(frame: pd.DataFrame, title: str, select: bool = True, metric: str = "f1", fixed: bool = False,
            field: str = "cell_id") -> alt.FacetChart:
    """Model rows x (bottom | top) panels; datasets down, corruption level across. Colour: the metric (fixed range
    or fitted to the cells); a thick red outline and ✕: the value shown is itself a convergence failure; a dashed
    red outline and ✕N: N runs at another learning rate or seed failed; grey outline: running or queued; orange
    diamond: a surprise; dark grey: healing not reached; light grey: not scored. A click selects the cell."""
    order = sorted(frame["level"].unique(), key=lambda s: int(s.rstrip("%")))
    domain = colour_domain(frame["value"], metric, fixed)
    reverse = metric in LOWER_IS_BETTER
    frame = frame.assign(ink=ink(frame["value"], tuple(domain) if domain else None, reverse))
    pick = alt.selection_point(name="cell", fields=[field], on="click", clear="dblclick")
    base = alt.Chart().encode(
        x=alt.X("level:N", sort=order, title="layers corrupted", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("dataset:N", title=None),
        tooltip=["model", alt.Tooltip("dataset_path:N", title="dataset"), "setting",
                 alt.Tooltip("value:Q", format=".2f", title=title), alt.Tooltip("std:Q", format=".2f"),
                 "seeds", alt.Tooltip("lr:N", title="learning rate kept"), "runs",
                 alt.Tooltip("status:N", title="status"), alt.Tooltip("why_failed:N", title="convergence failures"),
                 alt.Tooltip("why_surprising:N", title="surprise")])
    layers = []
    if domain is not None:
        layers.append(base.transform_filter("isValid(datum.value)").mark_rect().encode(
            color=alt.Color("value:Q", title=title, legend=alt.Legend(orient="bottom", direction="vertical",
                                                                       format=".1f", gradientLength=90),
                            scale=alt.Scale(scheme="viridis", domain=domain, clamp=True, reverse=reverse)),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.55)) if select else alt.value(1.0)))
    layers.append(base.transform_filter(f"!isValid(datum.value) && datum.status != '{NOT_REACHED}'").mark_rect(
        color="#e6e6e6"))
    if select:  # on the first layer, which exists whether or not anything is scored yet
        layers[0] = layers[0].add_params(pick)
    if (frame["status"] == NOT_REACHED).any():
        layers.append(base.transform_filter(f"datum.status == '{NOT_REACHED}'").transform_calculate(
            kind=f"'{NOT_REACHED}'").mark_rect().encode(fill=alt.Fill(
                "kind:N", title="", scale=alt.Scale(domain=[NOT_REACHED], range=["#555555"]), legend=BELOW)))
    layers += [base.transform_filter(f"datum.ink == '{colour}'").mark_text(fontSize=10, color=colour).encode(
        text="label:N") for colour in ("white", "black", "#444444")]  # a colour scale here would clash with the metric's
    layers += mark_outlines(base, frame["mark"])
    if frame["surprise"].any():
        layers.append(base.transform_filter("datum.surprise").transform_calculate(kind=f"'{SURPRISE}'").mark_point(
            filled=True, size=70, xOffset=-18, yOffset=-8, color="#ff7f0e").encode(
            shape=alt.Shape("kind:N", scale=alt.Scale(domain=[SURPRISE], range=["diamond"]), title="",
                            legend=BELOW)))
    layered = alt.layer(*layers, data=frame)
    step = max(24, min(58, (COLUMN_PX - 160) // (2 * max(1, len(order)))))
    return layered.properties(width=alt.Step(step), height=alt.Step(30)).facet(
        column=alt.Column("panel:N", title=None, sort=["bottom", "top"],
                          header=alt.Header(labelExpr="datum.value + ' layers corrupted'")),
        row=alt.Row("model:N", title=None)).resolve_scale(color="shared")


# ------------------------------------------------------------------------------------------ curves
def curve_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scored cell and side panel; a panel per line (model, dataset and what sets the experiment apart),
    so two experiments of one dataset are two panels, never one line."""
    rows = []
    lines = line_names(table) if len(table) else pd.Series(dtype=object)
    for r, line in zip(table.itertuples(), lines):
        if not np.isfinite(r.f1):
            continue
        for side in both_panels(r.side):
            std = float(r.f1_std) if np.isfinite(r.f1_std) else 0.0
            rows.append({"cell_id": r.cell_id, "model": r.model, "dataset": r.dataset, "line": line,
                         "panel": f"{line} · {r.dataset}", "side": side, "level": 100 * r.level,
                         "setting": setting_label(r.side, r.level), "f1": r.f1, "lo": r.f1 - std, "hi": r.f1 + std,
                         "seeds": r.n_seeds, "failures": int(r.n_failures), "surprise": bool(r.surprises),
                         "why_failed": "; ".join(r.failures), "why_surprising": "; ".join(r.surprises)})
    return pd.DataFrame(rows)


def degradation_curves(frame: pd.DataFrame, select: bool = True) -> alt.FacetChart:
    """F1 against % of layers corrupted: bottom (red) and top (blue) lines, ± std bands, the clean model as a
    dashed reference; red crosses: cells with convergence failures; orange diamonds: surprises. One panel per
    model and dataset, wrapped FACET_COLUMNS to a row. A click on a point selects its cell."""
    clean = frame[frame["level"] == 0].groupby("panel")["f1"].first()  # each line's own clean cell
    frame = frame.assign(clean_f1=frame["panel"].map(clean))
    frame["reference"] = "clean model"
    pick = alt.selection_point(name="cell", fields=["cell_id"], on="click", clear="dblclick")
    x = alt.X("level:Q", title="% of layers corrupted", scale=alt.Scale(domain=[0, 100]))
    colour = alt.Color("side:N", scale=SIDE_COLOURS, title="corrupted from the", legend=BELOW)
    tooltip = ["setting", alt.Tooltip("f1:Q", format=".2f", title="weighted F1"), "seeds",
               alt.Tooltip("why_failed:N", title="convergence failures"),
               alt.Tooltip("why_surprising:N", title="surprise")]
    band = alt.Chart().mark_area(opacity=0.18).encode(x=x, y="lo:Q", y2="hi:Q", color=alt.Color(
        "side:N", scale=SIDE_COLOURS, legend=None))
    line = alt.Chart().mark_line().encode(x=x, y=alt.Y("f1:Q", title="weighted F1", scale=alt.Scale(zero=False)),
                                          color=colour)
    points = alt.Chart().mark_circle(size=60).encode(x=x, y="f1:Q", color=colour, tooltip=tooltip)
    if select:
        points = points.add_params(pick).encode(size=alt.condition(pick, alt.value(60), alt.value(30)))
    rule = alt.Chart().mark_rule(strokeDash=[6, 3], color="gray").encode(
        y="mean(clean_f1):Q", strokeDash=alt.StrokeDash("reference:N", title=None, legend=BELOW,
                                                        scale=alt.Scale(domain=["clean model"], range=[[6, 3]])))
    failed = alt.Chart().transform_filter("datum.failures > 0").transform_calculate(kind=f"'{FAILURE}'").mark_point(
        shape="cross", size=140, filled=True).encode(
        x=x, y="f1:Q", tooltip=tooltip, shape=alt.Shape("kind:N", scale=alt.Scale(
            domain=[FAILURE, SURPRISE], range=["cross", "diamond"]), title="marks", legend=BELOW),
        fill=alt.Fill("kind:N", scale=alt.Scale(domain=[FAILURE, SURPRISE], range=["#d62728", "#ff7f0e"]), legend=None))
    odd = alt.Chart().transform_filter("datum.surprise").transform_calculate(kind=f"'{SURPRISE}'").mark_point(
        size=120, filled=True, xOffset=9).encode(
        x=x, y="f1:Q", tooltip=tooltip, shape=alt.Shape("kind:N", scale=alt.Scale(
            domain=[FAILURE, SURPRISE], range=["cross", "diamond"]), title="marks"),
        fill=alt.Fill("kind:N", scale=alt.Scale(domain=[FAILURE, SURPRISE], range=["#d62728", "#ff7f0e"]), legend=None))
    return alt.layer(line, points, band, rule, failed, odd, data=frame).properties(
        width=PANEL_WIDTH, height=190).facet(facet=alt.Facet("panel:N", title=None), columns=FACET_COLUMNS)


def line_over(frame: pd.DataFrame, x: str, y: str, colour: str, x_title: str, y_title: str,
              colour_title: str | None = None) -> alt.Chart:
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x_title), y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color(f"{colour}:N", title=colour_title or colour, legend=alt.Legend(orient="bottom")),
        tooltip=[colour, x, alt.Tooltip(f"{y}:Q", format=".2f")]).properties(width=420, height=260)


# ------------------------------------------------------------------------------------------ epochs
EPOCH_AXIS = alt.Axis(tickMinStep=1, format="d")


# Charts that stretch to their column: fit the width only. With Vega's default "fit" the height given is the
# whole chart's, so a legend of long run names below it squeezed the plot to a few pixels.
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")


# The split's line style: its legend sits above the plot, where a long legend of run names below cannot push it
# out of a half-width column.
SPLIT_DASH = alt.StrokeDash("split:N", title=None, scale=alt.Scale(domain=["test", "validation"], range=[[1, 0], [5, 3]]),
                            legend=alt.Legend(orient="top", direction="horizontal", labelExpr=(
                                "datum.label == 'test' ? 'test (solid)' : 'validation (dashed)'"), symbolStrokeWidth=2,
                                symbolType="stroke", symbolStrokeColor="#555555"))
RUN_COLOURS = alt.Scale(scheme="tableau10")  # distinct hues in order (the theme's first two are both blue)


def epoch_curves(f1: pd.DataFrame, losses: pd.DataFrame, series: str = "label") -> alt.HConcatChart | alt.VConcatChart:
    """Per run: weighted F1 per epoch from the damage probe (epoch 0) on, validation dashed and test solid, and
    the training loss per epoch; one colour per run, named in the legend below."""
    legend = alt.Legend(orient="bottom", columns=1, labelLimit=0, title="run")
    f1_base = alt.Chart().encode(
        x=alt.X("epoch:Q", title="epoch (0 = probe before fine-tuning)", axis=EPOCH_AXIS),
        y=alt.Y("F1:Q", title="weighted F1", scale=alt.Scale(zero=False)),
        color=alt.Color(f"{series}:N", legend=legend, scale=RUN_COLOURS),
        tooltip=[series, "split", "epoch", alt.Tooltip("F1:Q", format=".2f")])
    f1_chart = alt.layer(f1_base.mark_line().encode(strokeDash=SPLIT_DASH),
                         f1_base.mark_point(filled=True, size=30), data=f1).properties(
        width="container", height=280, autosize=FIT_WIDTH)
    loss_chart = alt.Chart(losses).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch", axis=EPOCH_AXIS), y=alt.Y("train_loss:Q", title="training loss"),
        color=alt.Color(f"{series}:N", legend=None, scale=RUN_COLOURS),
        tooltip=[series, "epoch", alt.Tooltip("train_loss:Q", format=".4f")]).properties(
        width="container", height=280, autosize=FIT_WIDTH)
    return f1_chart, loss_chart


def run_curves(epochs: pd.DataFrame, title: str = "") -> alt.LayerChart:
    """One run's (or a few overlaid runs') test and validation F1 per epoch, integer epochs: test solid and
    validation dashed (legend above), one colour per run (legend below)."""
    long = epochs.melt(id_vars=[c for c in ("run", "epoch") if c in epochs], value_vars=[
        c for c in ("validation_f1_weighted", "test_f1_weighted") if c in epochs], var_name="split", value_name="F1")
    long["split"] = long["split"].str.replace("_f1_weighted", "")
    # one run: one colour as a value, not a colour legend on `split` (Vega-Lite merges two legends of one field, and
    # a hidden colour legend hid the line-style one with it)
    colour = alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=1, labelLimit=0), scale=RUN_COLOURS) \
        if "run" in long else alt.value("#1f77b4")
    base = alt.Chart().encode(
        x=alt.X("epoch:Q", title="epoch", axis=EPOCH_AXIS), y=alt.Y("F1:Q", title="weighted F1",
                                                                    scale=alt.Scale(zero=False),
                                                                    axis=alt.Axis(format=".1f")),
        color=colour, tooltip=list(long.columns))
    # lines and points as two layers: a line mark with point=True draws its legend's line samples blank
    return alt.layer(base.mark_line().encode(strokeDash=SPLIT_DASH), base.mark_point(filled=True, size=30),
                     data=long.dropna()).properties(width="container", height=240, autosize=FIT_WIDTH)


def loss_curve(epochs: pd.DataFrame) -> alt.Chart:
    colour = alt.Color("run:N", legend=None, scale=RUN_COLOURS) if "run" in epochs else alt.value("#ff7f0e")
    return alt.Chart(epochs).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch", axis=EPOCH_AXIS), y=alt.Y("train_loss:Q", title="training loss",
                                                                    axis=alt.Axis(format=".3~f")),
        color=colour, tooltip=[c for c in ("run", "epoch", "train_loss") if c in epochs]).properties(
        width="container", height=240, autosize=FIT_WIDTH)


# ------------------------------------------------------------------------------------------ embeddings
def class_colours(labels: pd.Series) -> tuple[pd.Series, alt.Scale]:
    """Distinct colours for up to 20 classes (tableau10, else tableau20); beyond, the 19 largest classes keep
    theirs and the rest are "other" (grey). Returns the labels to colour by and the scale."""
    counts = labels.value_counts()
    classes = sorted(counts.index, key=str)
    if len(classes) > MAX_COLOURED_CLASSES:
        keep = set(counts.index[:MAX_COLOURED_CLASSES - 1])
        labels = labels.where(labels.isin(keep), "other")
        classes = sorted(keep, key=str) + ["other"]
    scheme = "tableau10" if len(classes) <= 10 else "tableau20"
    scale = alt.Scale(domain=classes, scheme=scheme)
    if "other" in classes:
        from itertools import islice

        palette = list(islice(_TABLEAU20, len(classes) - 1)) + ["#bdbdbd"]
        scale = alt.Scale(domain=classes, range=palette)
    return labels, scale


_TABLEAU20 = ["#4c78a8", "#9ecae9", "#f58518", "#ffbf79", "#54a24b", "#88d27a", "#b79a20", "#f2cf5b", "#439894",
              "#83bcb6", "#e45756", "#ff9d98", "#79706e", "#bab0ac", "#d67195", "#fcbfd2", "#b279a2", "#d6a5c9",
              "#9e765f", "#d8b5a5"]


def embedding_panels(frame: pd.DataFrame, order: list[str], columns: int = 2, size: int = 230) -> alt.FacetChart:
    """Small multiples of 2-D projections, one panel per setting (its title names the run and seed), points
    coloured by true label with a legend of every class."""
    labels, scale = class_colours(frame["label"].astype(str))
    frame = frame.assign(label=labels)
    return alt.Chart(frame).mark_circle(size=14, opacity=0.7).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("label:N", title="true class", scale=scale,
                        legend=alt.Legend(orient="right", columns=1 if len(scale.domain) <= 20 else 2,
                                          symbolLimit=0, labelLimit=160)),
        tooltip=["label"]).properties(width=size, height=size).facet(
        facet=alt.Facet("panel:N", title=None, sort=order, header=alt.Header(labelLimit=2 * size, labelFontSize=11)),
        columns=columns).resolve_scale(x="independent", y="independent")


# ------------------------------------------------------------------------------------------ confusion
def confusion(matrix: list[list[int]], classes: list[str]) -> alt.LayerChart:
    """Row-normalised confusion matrix: each true class's predictions in % of that class (counts on hover);
    numbers printed in cells up to 12 classes, labels readable up to 20+ (angled, full length)."""
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0)
    rows = [{"true": classes[i], "predicted": classes[j], "share": share[i, j], "count": int(counts[i, j]),
             "of": int(totals[i, 0])} for i in range(len(classes)) for j in range(len(classes))]
    step = 34 if len(classes) <= 12 else 24
    base = alt.Chart(pd.DataFrame(rows)).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted class",
                axis=alt.Axis(labelAngle=-40 if len(classes) > 4 else 0, labelLimit=180)),
        y=alt.Y("true:N", sort=classes, title="true class", axis=alt.Axis(labelLimit=180)),
        tooltip=["true", "predicted", alt.Tooltip("share:Q", format=".1f", title="% of the true class"),
                 "count", alt.Tooltip("of:Q", title="examples of the true class")])
    chart = base.mark_rect().encode(color=alt.Color("share:Q", title="% of true class",
                                                    scale=alt.Scale(scheme="blues", domain=[0, 100])))
    if len(classes) <= 12:
        chart = chart + base.mark_text(fontSize=10).encode(
            text=alt.Text("share:Q", format=".0f"),
            color=alt.condition("datum.share > 60", alt.value("white"), alt.value("black")))
    return chart.properties(width=alt.Step(step), height=alt.Step(step))


# ------------------------------------------------------------------------------------------ where healing happens
def setting_order(frame: pd.DataFrame) -> list[str]:
    """Settings from the least to the most corruption, bottom before top at each level."""
    pairs = frame.drop_duplicates("setting")[["setting", "side", "level"]].itertuples(index=False)
    return [p.setting for p in sorted(pairs, key=lambda p: (p.level, side_rank(p.side)))]


def cka_small_multiples(frame: pd.DataFrame, columns: int = FACET_COLUMNS) -> alt.FacetChart:
    """CKA between each healed layer (rows) and each layer of the clean fine-tuned model (columns), one panel per
    corruption setting: a bright diagonal means the layers came back to their original function; brightness off
    the diagonal means other layers took their role."""
    order = [f"{d}" for d in sorted(frame["healed"].unique(), key=lambda n: frame[frame["healed"] == n]["healed_depth"].iloc[0])]
    return alt.Chart(frame).mark_rect().encode(
        x=alt.X("clean:N", sort=order, title="clean model's layer", axis=alt.Axis(labelAngle=-40)),
        y=alt.Y("healed:N", sort=order, title="healed model's layer"),
        # debiased CKA: about 0 for unrelated representations (it may dip below 0; such cells take 0's colour)
        color=alt.Color("cka:Q", title=["debiased CKA", "(0: chance)"],
                        scale=alt.Scale(scheme="viridis", domain=[0, 1], clamp=True)),
        tooltip=["setting", "healed", "clean", alt.Tooltip("cka:Q", format=".3f"), "runs"]).properties(
        width=alt.Step(22), height=alt.Step(22)).facet(
        facet=alt.Facet("setting:N", title=None, sort=setting_order(frame)), columns=columns)


LINE_SIDE_COLOURS = alt.Scale(domain=["bottom", "top", "all"], range=["#d62728", "#1f77b4", "#7b4173"])


def layer_similarity(frame: pd.DataFrame, y: str, y_title: str) -> alt.FacetChart:
    """Per layer, the mean similarity of the healed layer to the same layer of a reference model, bottom (red),
    top (blue) and all layers (purple), one panel per level; diamonds: layers that were corrupted; a dotted rule at
    0, the debiased CKA of unrelated representations (chance)."""
    order = sorted(frame["layer"].unique(), key=lambda n: frame[frame["layer"] == n]["depth"].iloc[0])
    frame = frame.assign(layer_kind=np.where(frame["corrupted"], "corrupted", "kept"), chance="chance (0)")
    low = min(0.0, float(np.nanmin(frame[y]))) if frame[y].notna().any() else 0.0
    base = alt.Chart().encode(
        x=alt.X("layer:N", sort=order, title="layer", axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(domain=[low, 1])),
        color=alt.Color("side:N", scale=LINE_SIDE_COLOURS, title="corrupted from the", legend=BELOW),
        tooltip=["setting", "layer", alt.Tooltip(f"{y}:Q", format=".3f"), "runs"])
    points = base.mark_point(size=60, filled=True).encode(
        shape=alt.Shape("layer_kind:N", title="layer", scale=alt.Scale(domain=["corrupted", "kept"],
                                                                       range=["diamond", "circle"]),
                        legend=BELOW))
    chance = alt.Chart().mark_rule(color="gray").encode(
        y=alt.datum(0), strokeDash=alt.StrokeDash("chance:N", title=None, legend=BELOW,
                                                   scale=alt.Scale(domain=["chance (0)"], range=[[2, 3]])))
    panels = sorted(frame["level_label"].unique(), key=lambda t: float(str(t).split("%")[0]))  # 17% before 100%
    return alt.layer(base.mark_line(), points, chance, data=frame).properties(width=PANEL_WIDTH, height=170).facet(
        facet=alt.Facet("level_label:N", title=None, sort=panels), columns=FACET_COLUMNS)


def weight_movement(frame: pd.DataFrame) -> alt.FacetChart:
    """Relative weight movement ||W_T - W_0|| / ||W_0|| per block during fine-tuning, per corruption setting."""
    order = sorted(frame["block"].unique(), key=lambda b: frame[frame["block"] == b]["order"].iloc[0])
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("block:N", sort=order, title="block", axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y("movement:Q", title="relative weight movement"),
        color=alt.Color("corrupted:N", title="block was corrupted",
                        scale=alt.Scale(domain=[True, False], range=["#d62728", "#9e9e9e"]),
                        legend=BELOW),
        tooltip=["setting", "block", alt.Tooltip("movement:Q", format=".4f"), "runs"]).properties(
        width=PANEL_WIDTH, height=170).facet(
        facet=alt.Facet("setting:N", title=None, sort=setting_order(frame)), columns=FACET_COLUMNS)


def class_recovery(frame: pd.DataFrame) -> alt.FacetChart:
    """Per class: F1 before fine-tuning (the probe), after, and the clean model's, one panel per setting."""
    long = frame.melt(id_vars=["setting", "class"], value_vars=["before", "after", "clean"], var_name="when",
                      value_name="F1")
    long["when"] = long["when"].map({"before": "before fine-tuning (probe)", "after": "healed (best epoch)",
                                     "clean": "clean model"})
    order = ["before fine-tuning (probe)", "healed (best epoch)", "clean model"]
    return alt.Chart(long).mark_bar().encode(
        y=alt.Y("class:N", title=None), x=alt.X("F1:Q", title="F1 of the class", scale=alt.Scale(domain=[0, 100])),
        yOffset=alt.YOffset("when:N", sort=order),
        color=alt.Color("when:N", sort=order, title=None, scale=alt.Scale(domain=order, range=[
            "#bdbdbd", "#2ca02c", "#1f77b4"]), legend=alt.Legend(orient="bottom")),
        tooltip=["setting", "class", "when", alt.Tooltip("F1:Q", format=".1f")]).properties(
        width=PANEL_WIDTH, height=alt.Step(7)).facet(facet=alt.Facet("setting:N", title=None), columns=FACET_COLUMNS)


def damage_scatter(points: pd.DataFrame, measure: str, outcome: str, measure_title: str,
                   outcome_title: str) -> alt.Chart:
    """Does damage predict healing: one point per corrupted cell, its damage measure before fine-tuning against
    what fine-tuning left, coloured by where the damage sat and shaped by its kind (the legends name both)."""
    shown = points.assign(setting=[setting_label(s, l) for s, l in zip(points["side"], points["level"])])
    return alt.Chart(shown.dropna(subset=[measure, outcome])).mark_point(size=80, opacity=0.85, filled=True).encode(
        x=alt.X(f"{measure}:Q", title=measure_title, scale=alt.Scale(zero=False)),
        y=alt.Y(f"{outcome}:Q", title=outcome_title, scale=alt.Scale(zero=False)),
        color=alt.Color("side:N", title="layers damaged", scale=LINE_SIDE_COLOURS,
                        legend=alt.Legend(orient="right", labelLimit=0)),
        shape=alt.Shape("method:N", title="damage", legend=alt.Legend(orient="right", labelLimit=0)),
        tooltip=["setting", "method", alt.Tooltip(f"{measure}:Q", format=".3f"),
                 alt.Tooltip(f"{outcome}:Q", format=".3f")]).properties(width=600, height=300)


def size_curves(points: pd.DataFrame, outcome: str, outcome_title: str, select: bool = True) -> alt.FacetChart:
    """Healing against training-set size (results/data_size.py): one line per corruption setting, the rows
    trained on along a log axis, ± one std over seeds as error bars on F1, a dotted rule at 0 for healing and the
    deficit. One panel per model and dataset; the legend below names every series. A click selects a cell."""
    frame = points.drop(columns=["run_ids"], errors="ignore").assign(
        lo=points["f1"] - points["f1_std"].fillna(0), hi=points["f1"] + points["f1_std"].fillna(0))
    x = alt.X("train_rows:Q", title="training rows (log scale)", scale=alt.Scale(type="log", nice=False),
              axis=alt.Axis(format=",d", tickCount=6))
    order = list(dict.fromkeys(frame["series"]))  # clean first, then bottom, top, all (data_size's order)
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    shades = iter(palette * (1 + len(order) // len(palette)))
    series_colours = alt.Scale(domain=order, range=[
        "#555555" if name.startswith("clean") else next(shades) for name in order])
    colour = alt.Color("series:N", title="corruption setting", scale=series_colours, legend=BELOW, sort=order)
    tooltip = ["series", alt.Tooltip("train_rows:Q", format=",d", title="training rows"),
               alt.Tooltip(f"{outcome}:Q", format=".2f", title=outcome_title.split(" (")[0]),
               alt.Tooltip("f1_std:Q", format=".2f", title="F1 std over seeds"), alt.Tooltip("n_seeds:Q", title="seeds")]
    y = alt.Y(f"{outcome}:Q", title=outcome_title, scale=alt.Scale(zero=False))
    line = alt.Chart().mark_line().encode(x=x, y=y, color=colour)
    points_layer = alt.Chart().mark_circle(size=60).encode(x=x, y=f"{outcome}:Q", color=colour, tooltip=tooltip)
    if select:
        pick = alt.selection_point(name="cell", fields=["cell_id"], on="click", clear="dblclick")
        points_layer = points_layer.add_params(pick).encode(size=alt.condition(pick, alt.value(60), alt.value(30)))
    layers = [line, points_layer]
    if outcome == "f1":
        layers.append(alt.Chart().mark_errorbar().encode(x=x, y=alt.Y("lo:Q", title=outcome_title), y2="hi:Q",
                                                          color=alt.Color("series:N", scale=series_colours, legend=None)))
    else:
        layers.append(alt.Chart().mark_rule(strokeDash=[2, 3], color="gray").encode(y=alt.datum(0)))
    return alt.layer(*layers, data=frame).properties(width=min(COLUMN_PX - 60, 2 * PANEL_WIDTH + 120),
                                                     height=260).facet(
        facet=alt.Facet("panel:N", title=None), columns=2)
