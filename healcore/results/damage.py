"""Does damage predict healing? Across the corrupted cells of a store, each damage measure taken before fine-tuning
against what fine-tuning left: Spearman's rho with a bootstrap 95% interval and the number of cells, per model and
dataset. If it predicts well, the cost of healing can be known before paying for it. Torch-free.

Damage measures (one value per cell, the mean of its kept runs):
- `probe_drop`: the clean cell's damage-probe F1 minus this cell's (task signal lost before fine-tuning);
- `angular_shift`, `bi_shift`: how much the damage changed how its layers turn their input (runs_table.damage_shifts:
  angular distance, Gromov et al. 2024; Block Influence, ShortGPT).
Outcomes: `f1_drop` (the clean cell's test F1 minus this cell's, after fine-tuning) and `recovery` (the guarded
recovery ratio of cell_table).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from healcore.results.cell_table import reinit_only
from healcore.results.keys import line_keys

MEASURES = {"probe_drop": "damage-probe F1 drop", "angular_shift": "angular-distance shift",
            "bi_shift": "Block Influence shift"}
OUTCOMES = {"f1_drop": "F1 drop after fine-tuning", "recovery": "recovery ratio"}
BOOTSTRAP = 2000  # resamples of the cells for the interval
MIN_CELLS = 4  # fewer cells give no rank correlation worth printing


def damage_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scored corrupted cell with a clean cell on its line: model, dataset, setting (side, level,
    method), each damage measure and each outcome. Only cells whose every parameter healed (full fine-tuning,
    train_layers all): where training was restricted, the outcome measures the restriction as much as the damage."""
    rows = []
    if len(table) and "mode" in table:
        table = table[table["mode"] == "full"]
    if len(table) and "train_layers" in table:
        table = table[table["train_layers"].astype(str).isin(["all", "-", "nan"])]
    if table.empty:
        return pd.DataFrame(columns=["model", "dataset", "side", "level", "method", *MEASURES, *OUTCOMES])
    for _, line in table.groupby(line_keys(table), dropna=False):
        clean = line[(line["side"] == "clean") & np.isfinite(line["f1"].astype(float))]
        if clean.empty:
            continue
        c = clean.iloc[0]
        for _, r in line[(line["side"] != "clean") & np.isfinite(line["f1"].astype(float))].iterrows():
            rows.append({"model": r["model"], "dataset": r["dataset"], "side": r["side"], "level": r["level"],
                         "method": r.get("method"), "cell_id": r.get("cell_id"),
                         "probe_drop": float(c["probe_f1"]) - float(r["probe_f1"]),
                         "angular_shift": _number(r.get("angular_shift")), "bi_shift": _number(r.get("bi_shift")),
                         "f1_drop": float(c["f1"]) - float(r["f1"]), "recovery": _number(r.get("recovery"))})
    return pd.DataFrame(rows, columns=["model", "dataset", "side", "level", "method", "cell_id", *MEASURES,
                                       *OUTCOMES])


def spearman(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Spearman's rho of paired values (NaN pairs dropped), its bootstrap 95% interval over the pairs, and n."""
    from scipy.stats import spearmanr

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
    n = len(x)
    if n < MIN_CELLS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": np.nan, "lo": np.nan, "hi": np.nan, "n": n}
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, n, n)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            draws.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = (np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan))
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": n}


def predictors(table: pd.DataFrame, reinit: bool = False) -> pd.DataFrame:
    """Per model and dataset, each damage measure against each outcome: rho, its interval and n cells. `reinit`:
    only the paper's damage (re-initialised cells)."""
    points = damage_points(reinit_only(table) if reinit else table)
    rows = []
    for (model, dataset), g in points.groupby(["model", "dataset"], sort=True):
        for measure, m_label in MEASURES.items():
            for outcome, o_label in OUTCOMES.items():
                stat = spearman(g[measure].to_numpy(float), g[outcome].to_numpy(float))
                rows.append({"model": model, "dataset": dataset, "measure": m_label, "outcome": o_label, **stat})
    return pd.DataFrame(rows, columns=["model", "dataset", "measure", "outcome", "rho", "lo", "hi", "n"])


def in_words(row) -> str:
    """One predictor row as a sentence, with what its interval allows one to say."""
    if not np.isfinite(row["rho"]):
        return f"{row['measure']} vs {row['outcome']}: too few cells with both ({row['n']}; {MIN_CELLS} needed)"
    verdict = ("predicts it" if row["lo"] > 0 else "predicts it inversely" if row["hi"] < 0
               else "not significant (the interval spans 0)")
    return (f"{row['measure']} vs {row['outcome']}: rho {row['rho']:+.2f} [{row['lo']:+.2f}, {row['hi']:+.2f}], "
            f"{row['n']} cells: {verdict}")


def _number(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return np.nan
    return out
