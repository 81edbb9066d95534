"""The paper's three claims, each decided by tests over seeds on a grid's cells, never by a raw comparison.
Torch-free.

1. "corrupted models never fully recover": per corrupted cell, a one-sided test that it scores below its clean cell.
2. "more corruption, worse": per side (bottom, top), a trend test: the slope of F1 over the share of layers corrupted
   (every seed of the clean cell, that side's cells and the all-layers cell) is below 0 (one-sided).
3. "bottom corruption hurts more than top": per level with both, a one-sided test that bottom scores below top.

Tests over seeds are paired where two or more seeds pair (compare.seed_test), else Welch's. The p-values of each
claim are corrected together over the whole table (Holm, or Benjamini-Hochberg), so a table of many lines does not
collect false verdicts. A line's verdict: "holds" where every test of it is significant after correction, "not
supported" where none is, "mixed" otherwise. With one seed a cell has no spread: "not testable (n = 1)", and the
evidence gives the raw direction. A line whose clean cell is no reference is "reference failed".
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.cell_table import _reference_failed, _unusable_reference, line_names, reinit_only, scored
from healcore.results.compare import ALPHA, CORRECTIONS, adjust, seed_test

CLAIMS = ("corrupted models never fully recover", "more corruption, worse", "bottom corruption hurts more than top")
REFERENCE_FAILED = "reference failed"  # the verdict where a line's clean cell is itself no measurement
NOT_TESTABLE = "not testable (n = 1)"  # one seed in a cell the claim needs: the raw direction is given beside it
VERDICTS = ("holds", "mixed", "not supported", NOT_TESTABLE, "insufficient", REFERENCE_FAILED)
COLUMNS = ["model", "dataset", "claim", "verdict", "evidence"]


def claims(table: pd.DataFrame, correction: str = "holm") -> pd.DataFrame:
    """The paper's three claims judged per line (model and what sets its experiment apart) and dataset."""
    table = scored(table)
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    reinit = reinit_only(table)
    pending = []  # (row index in out, claim, [(label, raw direction text, p)])
    out: list[list] = []
    for (line, dataset), cells in reinit.assign(line=line_names(reinit)).groupby(["line", "dataset"]):
        clean = cells[cells["side"] == "clean"]
        if len(clean) and _unusable_reference(clean).any():
            why = _reference_failed(cells).iloc[0]
            out += [[line, dataset, claim, REFERENCE_FAILED, f"not judged: {why}; rerun the clean cell"]
                    for claim in CLAIMS]
            continue
        for claim, tests in zip(CLAIMS, (_recover_tests(cells), _trend_tests(cells), _bottom_top_tests(cells))):
            if tests is None:
                out.append([line, dataset, claim, "insufficient", _needs(claim)])
            elif isinstance(tests, str):
                out.append([line, dataset, claim, NOT_TESTABLE, tests])
            else:
                out.append([line, dataset, claim, "", ""])
                pending.append((len(out) - 1, claim, tests))
    for claim in CLAIMS:  # each claim's p-values corrected together over the whole table
        mine = [(i, tests) for i, c, tests in pending if c == claim]
        p = np.array([t[2] for _, tests in mine for t in tests], dtype=float)
        finite = np.isfinite(p)
        adjusted = np.full(len(p), np.nan)
        adjusted[finite] = adjust(p[finite], correction) if finite.any() else []
        k = 0
        for i, tests in mine:
            significant, lines = 0, []
            for label, direction, _ in tests:
                q = adjusted[k]
                k += 1
                significant += bool(np.isfinite(q) and q < ALPHA)
                lines.append(f"{label}: {direction}, p = {_p(q)}")
            verdict = "holds" if significant == len(tests) else "not supported" if not significant else "mixed"
            out[i][3] = verdict
            out[i][4] = f"{significant}/{len(tests)} significant ({CORRECTIONS[correction]}, α = {ALPHA}): " + \
                "; ".join(lines)
    return pd.DataFrame(out, columns=COLUMNS)


def _p(q: float) -> str:
    return "–" if not np.isfinite(q) else ("< 0.001" if q < 0.001 else f"{q:.3f}")


def _needs(claim: str) -> str:
    return {CLAIMS[0]: "needs clean and corrupted cells", CLAIMS[1]: "needs a side with two or more levels and the "
            "clean cell", CLAIMS[2]: "needs bottom and top cells at one level"}[claim]


def _one_seed(cells: pd.DataFrame) -> bool:
    return bool((cells["n_seeds"].fillna(0) < 2).any())


def _seeds(r) -> dict:
    return {int(k): float(v) for k, v in (r["per_seed"] or {}).items()}


def _recover_tests(cells: pd.DataFrame):
    """Claim 1: each corrupted cell below clean (one-sided)."""
    clean = cells[cells["side"] == "clean"]
    corrupted = cells[cells["side"].isin(["bottom", "top", "all"])].sort_values("level")
    if clean.empty or corrupted.empty:
        return None
    c = clean.iloc[0]
    if _one_seed(pd.concat([clean, corrupted])):
        best = corrupted.loc[corrupted["f1"].idxmax()]
        return (f"raw direction: best corrupted cell {setting_label(best['side'], best['level'])} {best['f1']:.2f} vs "
                f"clean {c['f1']:.2f} ({best['f1'] - c['f1']:+.2f}); every corrupted cell below clean: "
                f"{'yes' if (corrupted['f1'] < c['f1']).all() else 'no'}")
    tests = []
    for r in corrupted.to_dict("records"):
        _, p = seed_test(_seeds(r), _seeds(c), alternative="less")
        tests.append((setting_label(r["side"], r["level"]), f"{r['f1']:.2f} vs clean {c['f1']:.2f}", p))
    return tests


def _trend_tests(cells: pd.DataFrame):
    """Claim 2: per side, F1 falls with the share of layers corrupted (one-sided slope test over every seed)."""
    from scipy import stats

    tests, raw = [], []
    one_seed = _one_seed(cells)
    for side in ("bottom", "top"):
        line = cells[cells["side"].isin([side, "clean", "all"])].sort_values("level")
        if (line["side"] == side).sum() < 1 or len(line) < 3 or not (line["side"] == "clean").any():
            continue
        x = [float(r["level"]) for r in line.to_dict("records") for _ in _seeds(r)]
        y = [v for r in line.to_dict("records") for v in _seeds(r).values()]
        raw.append(f"{side}: {' > '.join(f'{v:.1f}' for v in line['f1'])}")
        if one_seed or len(set(x)) < 3:
            continue
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            fit = stats.linregress(x, y, alternative="less")
        tests.append((side, f"slope {fit.slope / 100:+.2f} F1 per % of layers", float(fit.pvalue)))
    if not raw:
        return None
    if one_seed:
        return "raw direction: " + "; ".join(raw)
    return tests or None


def _bottom_top_tests(cells: pd.DataFrame):
    """Claim 3: at each level with both, bottom below top (one-sided)."""
    pairs = []
    for level, g in cells[cells["side"].isin(["bottom", "top"])].groupby("level"):
        b, t = g[g["side"] == "bottom"], g[g["side"] == "top"]
        if len(b) and len(t):
            pairs.append((level, b.iloc[0], t.iloc[0]))
    if not pairs:
        return None
    if _one_seed(pd.DataFrame([x for _, b, t in pairs for x in (b, t)])):
        return "raw direction: " + "; ".join(f"{int(round(level * 100))}%: bottom {b['f1']:.2f} vs top {t['f1']:.2f}"
                                             for level, b, t in pairs)
    tests = []
    for level, b, t in pairs:
        _, p = seed_test(_seeds(b), _seeds(t), alternative="less")
        tests.append((f"{int(round(level * 100))}%", f"bottom {b['f1']:.2f} vs top {t['f1']:.2f}", p))
    return tests


def bottom_vs_top_tests(runs: pd.DataFrame, table: pd.DataFrame, correction: str = "holm") -> pd.DataFrame:
    """Tests of bottom against top at each level, two-sided: paired over seeds (per dataset, where two or more pair)
    and paired over datasets (cell means, where three or more), corrected together (`p_adj`)."""
    from scipy import stats

    rows = []
    sided = scored(table)
    sided = sided[sided["side"].isin(["bottom", "top"])]
    for (model, level), g in sided.groupby(["model", "level"]):
        for dataset, dg in g.groupby("dataset"):
            b, t = dg[dg["side"] == "bottom"], dg[dg["side"] == "top"]
            if not len(b) or not len(t):
                continue
            sb, st = _seeds(b.iloc[0]), _seeds(t.iloc[0])
            common = sorted(set(sb) & set(st))
            if len(common) >= 2:
                _, p = seed_test(sb, st)
                rows.append({"model": model, "level": level, "paired_over": f"seeds ({dataset})", "n": len(common),
                             "mean_diff_bottom_minus_top": float(np.mean([sb[s] - st[s] for s in common])),
                             "p_value": p})
        piv = g.pivot_table(index="dataset", columns="side", values="f1")
        if {"bottom", "top"} <= set(piv.columns):
            piv = piv.dropna()
            if len(piv) >= 3:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p = float(stats.ttest_rel(piv["bottom"], piv["top"]).pvalue)
                rows.append({"model": model, "level": level, "paired_over": "datasets", "n": len(piv),
                             "mean_diff_bottom_minus_top": float((piv["bottom"] - piv["top"]).mean()),
                             "p_value": p if np.isfinite(p) else np.nan})
    out = pd.DataFrame(rows, columns=["model", "level", "paired_over", "n", "mean_diff_bottom_minus_top", "p_value"])
    finite = out["p_value"].notna()
    out["p_adj"] = np.nan
    if finite.any():
        out.loc[finite, "p_adj"] = adjust(out.loc[finite, "p_value"].to_numpy(dtype=float), correction)
    return out
