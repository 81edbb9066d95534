"""What deserves a second look, in three kinds that every page, the report and the exports draw differently.

- Convergence failures, per run: the run crashed or diverged (a NaN/inf loss). It has no score, is left out of its
  cell, and counts against its learning rate when the cell picks one (cell_table). Nothing else excludes a run.
- Flags, per run, on runs that are kept as measurements: it did not learn (it predicts one class, or its loss did
  not fall): for a heavily corrupted model that is the measurement, "it did not heal"; its seed scores far from its
  siblings' (above or below: a warning, and its cell is also reported without it); a file beside its score is
  damaged (only the views that read that file leave it out).
- Surprises, per cell: the cell leaves the trend of its neighbouring corruption levels, or scores higher than a
  cell with less corruption. They are findings about the model, not failures of the run.

`RULES` says each rule in one sentence with its threshold (the flags page and the report print them);
`summary(runs, table)` gives the counts that every view shows, so they agree.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.keys import as_text

COLLAPSE_MARGIN = 1.0  # F1 points above the majority-class F1 that still count as "predicts one class"
FLAT_LOSS = 0.98  # a final loss above this share of the first epoch's did not fall
SEED_OUTLIER_POINTS = 10.0  # a seed this far (F1 points) from the median of its siblings is a stray...
SEED_OUTLIER_SPREAD = 3.0  # ...and farther than this many times the siblings' own spread
TREND_POINTS = 5.0  # a cell off its neighbours' line by less than this (or 2 std) is within noise
DIVERGED = re.compile(r"\b(nan|inf|infinite|infinity|diverged?|non-finite)\b", re.IGNORECASE)  # words, not "info"

DID_NOT_LEARN = "did not learn"  # the prefix of the flags that say so (collapsed, flat loss)
STRAY = "stray seed"  # the prefix of a seed far from its siblings
DAMAGED = "damaged"  # the prefix of a damaged file's flag
RULES = {
    "failed": "A run that crashed or whose loss became NaN or infinite (diverged) is a convergence failure: it has no "
              "score, is left out of its cell, and counts against its learning rate when the cell picks one.",
    "collapsed": f"A run whose test F1 is within {COLLAPSE_MARGIN:g} point of the majority-class F1 predicts one class: "
                 f"it did not learn; it stays in its cell as the measurement (a model that did not heal), flagged.",
    "flat loss": f"A run of 2 or more epochs whose last training loss is above {FLAT_LOSS:.0%} of its first did not "
                 f"learn; it stays in its cell, flagged.",
    "stray seed": f"A seed more than {SEED_OUTLIER_POINTS:g} F1 points and {SEED_OUTLIER_SPREAD:g} times its siblings' "
                  f"range from their median (3 or more seeds at one learning rate) is a warning, above or below: its "
                  f"cell is reported with it and, beside, without it.",
    "damaged": "A damaged file (analysis, features, a checkpoint) limits only the views that read it; the run's score "
               "stays.",
    "surprise": f"A cell more than max({TREND_POINTS:g} points, 2 std) off the line between its neighbouring levels, or "
                f"above a cell with less corruption by more than their spread, is a surprise: a finding, not a failure.",
}


def _num(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


# ------------------------------------------------------------------------------------------ per run
def run_failures(r) -> list[str]:
    """Why a run is no measurement: it crashed or diverged (a failed state). Nothing else excludes a run."""
    if r.get("state") != "failed":
        return []
    err = str(r.get("error") or "")
    return ["diverged (NaN/inf loss)" if DIVERGED.search(err) else f"failed: {err[:120] or 'no reason recorded'}"]


def run_flags(r) -> list[str]:
    """What to know about a kept run (its own; stray seeds need its siblings: seed_outliers)."""
    out = []
    for damage in r.get("damaged") or []:
        out.append(f"{DAMAGED}: {damage} (views that read it leave this run out; its score stays)")
    f1, majority = r.get("test_f1_weighted"), r.get("majority_f1")
    if _num(f1) and _num(majority) and f1 <= majority + COLLAPSE_MARGIN:
        out.append(f"{DID_NOT_LEARN}: collapsed, F1 {f1:.2f} <= majority-class F1 {majority:.2f} (one class predicted)")
    first, last = r.get("first_loss"), r.get("final_loss")
    if _num(first) and _num(last) and (r.get("epochs") or 0) >= 2 and last >= first * FLAT_LOSS:
        out.append(f"{DID_NOT_LEARN}: loss not decreasing ({first:.3f} -> {last:.3f})")
    if r.get("state") == "completed" and not _num(r.get(f"validation_{r.get('metric') or 'f1_weighted'}")) \
            and r.get("select_on") == "validation":
        out.append("no validation score: its best epoch and learning rate were chosen on test")
    return out


def seed_outliers(runs: pd.DataFrame, cell_keys: list[str]) -> dict[str, str]:
    """run_id -> reason, for completed runs whose F1 is far from the median of the other seeds of the same cell
    and learning rate (at least 3 seeds), above or below: a warning, never an exclusion."""
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
                out[r.run_id] = (f"{STRAY}: seed {r.seed} {'above' if gap > 0 else 'below'} its siblings, F1 "
                                 f"{r.test_f1_weighted:.2f} vs median {median:.2f} of {len(others)} other seeds")
    return out


def with_failures(runs: pd.DataFrame, cell_keys: list[str]) -> pd.DataFrame:
    """runs plus `failures` (why it is no measurement) and `failed`, and `flags` (what to know about a kept run)
    and `flagged`, per run."""
    outliers = seed_outliers(runs, cell_keys) if len(runs) else {}
    records = runs.to_dict("records")
    failures = [run_failures(r) for r in records]
    notes = [run_flags(r) + ([outliers[r["run_id"]]] if r["run_id"] in outliers else []) for r in records]
    return runs.assign(failures=failures, failed=[bool(f) for f in failures], flags=notes,
                       flagged=[bool(n) for n in notes])


# ------------------------------------------------------------------------------------------ per cell
def cell_surprises(table: pd.DataFrame, line_keys: list[str]) -> list[list[str]]:
    """Per cell of `table` (cells with a score), what is surprising about it along its degradation line. A cell
    whose value is a convergence failure is no point of a line: it is neither surprising nor a neighbour."""
    out: list[list[str]] = [[] for _ in range(len(table))]
    position = {idx: i for i, idx in enumerate(table.index)}
    failed = table["value_failed"].astype(bool) if "value_failed" in table else pd.Series(False, index=table.index)
    if "did_not_learn" in table:  # a clean cell that did not learn is no reference, so no neighbour either
        failed |= table["did_not_learn"].astype(bool) & (table["side"] == "clean")
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
    flagged_runs = int(runs["flagged"].sum()) if "flagged" in runs and len(runs) else 0
    return {"runs with convergence failures": failed_runs,
            "cells with convergence failures": int((table["n_failures"] > 0).sum()) if len(table) else 0,
            "flagged runs (kept)": flagged_runs,
            "surprising cells": int(table["surprises"].map(bool).sum()) if len(table) else 0}


def summary_line(counts: dict[str, int]) -> str:
    return (f"{counts['runs with convergence failures']} run(s) with convergence failures (crashed or diverged) in "
            f"{counts['cells with convergence failures']} cell(s); {counts.get('flagged runs (kept)', 0)} flagged "
            f"run(s) kept as measurements; {counts['surprising cells']} surprising cell(s)")
