"""What deserves a second look, in two kinds that every page, the report and the exports draw differently.

- Convergence failures, per run: the run failed (NaN/inf loss, a crash), a file of it is damaged, it collapsed to
  the majority class, its loss did not fall, or its score sits far from its sibling seeds'. They say the number
  is not a measurement of healing; rerun or exclude.
- Surprises, per cell: the cell leaves the trend of its neighbouring corruption levels, or scores higher than a
  cell with less corruption. They are findings about the model, not failures of the run.

`summary(runs, table)` gives the counts that every view shows, so they agree.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.keys import as_text

COLLAPSE_MARGIN = 1.0  # F1 points above the majority-class F1 that still count as "predicts one class"
FLAT_LOSS = 0.98  # a final loss above this share of the first epoch's did not fall
SEED_OUTLIER_POINTS = 10.0  # a seed this far (F1 points) from the median of its siblings is suspect...
SEED_OUTLIER_SPREAD = 3.0  # ...and farther than this many times the siblings' own spread
TREND_POINTS = 5.0  # a cell off its neighbours' line by less than this (or 2 std) is within noise


def _num(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


# ------------------------------------------------------------------------------------------ per run
def run_failures(r) -> list[str]:
    """The failures one run shows on its own (seed outliers need its siblings: seed_outliers)."""
    out = []
    if r.get("state") == "failed":
        err = str(r.get("error") or "")
        out.append("diverged (NaN/inf loss)" if "nan" in err.lower() or "inf" in err.lower()
                   else f"failed: {err[:120] or 'no reason recorded'}")
    for damage in r.get("damaged") or []:
        out.append(f"damaged: {damage}")
    f1, majority = r.get("test_f1_weighted"), r.get("majority_f1")
    if _num(f1) and _num(majority) and f1 <= majority + COLLAPSE_MARGIN:
        out.append(f"collapsed: F1 {f1:.2f} <= majority-class F1 {majority:.2f} (one class predicted)")
    first, last = r.get("first_loss"), r.get("final_loss")
    if _num(first) and _num(last) and (r.get("epochs") or 0) >= 2 and last >= first * FLAT_LOSS:
        out.append(f"loss not decreasing ({first:.3f} -> {last:.3f})")
    return out


def seed_outliers(runs: pd.DataFrame, cell_keys: list[str]) -> dict[str, str]:
    """run_id -> reason, for completed runs whose F1 is far from the median of the other seeds of the same cell
    and learning rate (at least 3 seeds)."""
    done = runs[(runs["state"] == "completed") & runs["test_f1_weighted"].notna()]
    keys = [k for k in cell_keys if k in done] + ["lr"]
    out = {}
    if done.empty:
        return out
    for _, g in done.assign(**{k: as_text(done[k]) for k in keys}).groupby(keys, sort=False):
        if len(g) < 3:
            continue
        for r in g.itertuples():
            others = g[g["run_id"] != r.run_id]["test_f1_weighted"]
            median, spread = float(others.median()), float(others.max() - others.min())
            gap = r.test_f1_weighted - median
            if abs(gap) > max(SEED_OUTLIER_POINTS, SEED_OUTLIER_SPREAD * spread):
                out[r.run_id] = (f"seed {r.seed} far from its siblings: F1 {r.test_f1_weighted:.2f} vs median "
                                 f"{median:.2f} of {len(others)} other seeds")
    return out


def with_failures(runs: pd.DataFrame, cell_keys: list[str]) -> pd.DataFrame:
    """runs plus `failures` (list of reasons) and `failed` (any reason) per run."""
    outliers = seed_outliers(runs, cell_keys) if len(runs) else {}
    failures = [run_failures(r) + ([outliers[r["run_id"]]] if r["run_id"] in outliers else [])
                for r in runs.to_dict("records")]
    return runs.assign(failures=failures, failed=[bool(f) for f in failures])


# ------------------------------------------------------------------------------------------ per cell
def cell_surprises(table: pd.DataFrame, line_keys: list[str]) -> list[list[str]]:
    """Per cell of `table` (cells with a score), what is surprising about it along its degradation line. A cell
    whose value is a convergence failure is no point of a line: it is neither surprising nor a neighbour."""
    out: list[list[str]] = [[] for _ in range(len(table))]
    position = {idx: i for i, idx in enumerate(table.index)}
    failed = table["value_failed"].astype(bool) if "value_failed" in table else pd.Series(False, index=table.index)
    scored = table[table["f1"].notna() & ~failed]
    sided = scored[scored["side"].isin(["bottom", "top"])]
    keys = [k for k in line_keys if k in table]
    for _, g in sided.groupby(keys + ["side", "method"], dropna=False):
        line = _line(scored, keys, g)
        for i in range(1, len(line)):
            prev, cur = line[i - 1], line[i]
            noise = max(_std(prev), _std(cur), 0.5)
            if cur.f1 <= prev.f1 + noise:
                continue
            # more corruption scored higher: the surprise belongs to this side's cell of the step (clean and
            # all-layers cells are the references both sides share)
            here, there = setting_label(cur.side, cur.level), setting_label(prev.side, prev.level)
            if cur.side in ("bottom", "top"):
                out[position[cur.Index]].append(
                    f"non-monotone: {here} {cur.f1:.2f} above {there} {prev.f1:.2f} with less corruption")
            elif prev.side in ("bottom", "top"):
                out[position[prev.Index]].append(
                    f"non-monotone: {there} {prev.f1:.2f} below {here} {cur.f1:.2f} with more corruption")
        for i, reason in _off_trend(line):
            out[position[line[i].Index]].append(reason)
    return out


def _line(scored: pd.DataFrame, keys: list[str], g: pd.DataFrame) -> list:
    """A side's cells ordered by level, between the clean cell and the all-layers cell of the same line."""
    first = g.iloc[0]
    mask = np.ones(len(scored), dtype=bool)
    for k in keys:
        mask &= (as_text(scored[k]) == as_text(pd.Series([first[k]])).iloc[0]).to_numpy()
    clean = scored[mask & (scored["side"] == "clean").to_numpy()]
    full = scored[mask & (scored["side"] == "all").to_numpy() & (scored["method"] == first["method"]).to_numpy()]
    return [r for r in [next(clean.itertuples(), None), *g.sort_values("level").itertuples(),
                        next(full.itertuples(), None)] if r is not None]


def _off_trend(line: list) -> list[tuple[int, str]]:
    """Cells far off the straight line between their neighbouring levels (a spike or a dip), beyond their seed
    spread; only where a side has at least two corrupted levels (with one, a dip is the non-monotone step)."""
    if sum(1 for r in line if r.side in ("bottom", "top")) < 2:
        return []
    dev = [0.0] * len(line)
    for i in range(1, len(line) - 1):
        prev, cur, nxt = line[i - 1], line[i], line[i + 1]
        expected = prev.f1 + (nxt.f1 - prev.f1) * (cur.level - prev.level) / max(1e-9, nxt.level - prev.level)
        if (cur.f1 - prev.f1) * (cur.f1 - nxt.f1) > 0:  # a spike or a dip, not a steep slope
            dev[i] = abs(cur.f1 - expected)
    out = []
    for i in range(1, len(line) - 1):
        cur = line[i]
        spread = max(2 * _std(cur), TREND_POINTS)
        # the neighbours of a single odd point look off too: only the worst of a run of them
        if cur.side in ("bottom", "top") and dev[i] > spread and dev[i] >= max(dev[i - 1], dev[i + 1]):
            out.append((i, f"off trend: {cur.f1:.2f}, {dev[i]:.2f} from the line between neighbouring levels "
                           f"(spread {spread:.2f})"))
    return out


def _std(r) -> float:
    value = getattr(r, "f1_std", 0.0)
    return float(value) if _num(value) else 0.0


# ------------------------------------------------------------------------------------------ counts
def summary(runs: pd.DataFrame, table: pd.DataFrame) -> dict[str, int]:
    """The counts every page, the report and the exports show for a store."""
    failed_runs = int(runs["failed"].sum()) if "failed" in runs and len(runs) else 0
    return {"runs with convergence failures": failed_runs,
            "cells with convergence failures": int((table["n_failures"] > 0).sum()) if len(table) else 0,
            "surprising cells": int(table["surprises"].map(bool).sum()) if len(table) else 0}


def summary_line(counts: dict[str, int]) -> str:
    return (f"{counts['runs with convergence failures']} run(s) with convergence failures in "
            f"{counts['cells with convergence failures']} cell(s); {counts['surprising cells']} surprising cell(s)")
