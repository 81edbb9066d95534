"""How does healing grow with training-set size? Each corruption setting's cells measured at several `max_train`
caps, as one series: its F1, its healing (F1 minus the damage probe's, before fine-tuning) and its deficit to the
clean cell of the same experiment at the same size, against the rows it really trained on. Torch-free.

A series is every cell sharing all of a cell's key but the cap (model, dataset, recipe, damage and where it sits);
only series measured at two sizes or more are shown. The x value is the number of training rows the runs report
(after the cap and the validation carve-out); runs stored before healcore recorded it fall back to the cap.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.keys import CELL_KEYS, damage_label, line_keys, side_rank, text_of

SIZE = "max_train"  # the setting whose values are the sizes
OUTCOMES = {"f1": "weighted F1", "healing": "healing (F1 − damage probe before fine-tuning)",
            "deficit": "deficit to the clean model at the same size (F1 points)"}
COLUMNS = ["model", "dataset", "panel", "series", "side", "level", "setting", "cell_id", SIZE, "train_rows", "f1",
           "f1_std", "n_seeds", "probe_f1", "healing", "deficit", "run_ids"]


def series_label(cell) -> str:
    """A series in words: its damage (keys.damage_label), plus the training where it is not the paper's."""
    trained = text_of(cell.get("train_layers", "all"))
    return damage_label(cell) + ("" if trained in ("all", "-") else f", {trained} layers trained")


def size_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scored cell of a series measured at two sizes or more (see the module's words), sorted by
    panel, series and size."""
    if table.empty or SIZE not in table or "f1" not in table:
        return pd.DataFrame(columns=COLUMNS)
    scored = table[np.isfinite(pd.to_numeric(table["f1"], errors="coerce"))]
    series_keys = [k for k in CELL_KEYS if k in scored.columns and k != SIZE]
    line = line_keys(scored)  # the size is part of a line: the clean cell of the same size is the reference
    clean = {tuple(text_of(r[k]) for k in line): float(r["f1"])
             for r in scored[scored["side"] == "clean"].to_dict("records")}
    rows = []
    for _, series in scored.groupby([scored[k].map(text_of) for k in series_keys], sort=False):
        if series[SIZE].nunique() < 2:
            continue
        for r in series.to_dict("records"):
            reference = clean.get(tuple(text_of(r[k]) for k in line), np.nan)
            rows_trained = _number(r.get("train_rows"))
            cap = _number(r[SIZE])
            rows.append({"model": r["model"], "dataset": r["dataset"], "panel": f"{r['model']} · {r['dataset']}",
                         "series": series_label(r), "side": r["side"], "level": r["level"],
                         "setting": setting_label(r["side"], r["level"]), "cell_id": r.get("cell_id"),
                         SIZE: r[SIZE], "train_rows": rows_trained if np.isfinite(rows_trained) else cap,
                         "f1": float(r["f1"]), "f1_std": _number(r.get("f1_std")), "n_seeds": r.get("n_seeds"),
                         "probe_f1": _number(r.get("probe_f1")),
                         "healing": float(r["f1"]) - _number(r.get("probe_f1")),
                         "deficit": reference - float(r["f1"]), "run_ids": r.get("run_ids")})
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    out["series"] = _told_apart(out, scored, series_keys)
    order = out.assign(rank=out["side"].map(side_rank))
    return out.loc[order.sort_values(["panel", "rank", "level", "series", "train_rows"]).index].reset_index(drop=True)


def _told_apart(out: pd.DataFrame, scored: pd.DataFrame, series_keys: list[str]) -> list[str]:
    """Series labels with the other settings that differ inside a panel (epochs=10, pooling=mean...), so that two
    experiments of one model and dataset never share a label."""
    by_cell = scored.set_index("cell_id") if "cell_id" in scored else None
    named = {"model", "dataset", "side", "level", "n_layers", "layers", "method", "heads", "train_layers"}
    labels = list(out["series"])
    if by_cell is None:
        return labels
    for _, panel in out.groupby("panel", sort=False):
        cells = by_cell.loc[panel["cell_id"]]
        differ = [k for k in series_keys if k not in named and cells[k].map(text_of).nunique() > 1]
        for i, cell in zip(panel.index, panel["cell_id"]):
            extra = ", ".join(f"{k}={text_of(by_cell.at[cell, k])}" for k in differ)
            labels[out.index.get_loc(i)] += f" ({extra})" if extra else ""
    return labels


def size_table(points: pd.DataFrame, outcome: str = "f1") -> pd.DataFrame:
    """The points as a table to read: one row per series, one column per training size (rows trained on), each
    cell `outcome` (± std over seeds for F1)."""
    if points.empty:
        return pd.DataFrame()
    def shown(r):
        if outcome == "f1" and np.isfinite(r["f1_std"]) and (r["n_seeds"] or 0) > 1:
            return f"{r['f1']:.2f} ± {r['f1_std']:.2f}"
        value = r[outcome]
        return f"{value:.2f}" if np.isfinite(value) else "–"

    frame = points.assign(value=[shown(r) for r in points.to_dict("records")],
                          size=[f"{int(round(n)):,} rows" for n in points["train_rows"]])
    sizes = sorted(frame["size"].unique(), key=lambda s: int(s.split()[0].replace(",", "")))
    wide = frame.pivot_table(index=["panel", "series"], columns="size", values="value", aggfunc="first", sort=False)
    return wide.reindex(columns=sizes).reset_index().rename_axis(columns=None)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan
