"""The paper's three claims judged on a grid's cells, and paired tests of bottom against top. Torch-free."""
from __future__ import annotations

import numpy as np
import pandas as pd

from healcore.core.layers import setting_label
from healcore.results.cell_table import _reference_failed, _value_failed, line_names, reinit_only, scored

CLAIMS = ("corrupted models never fully recover", "more corruption, worse", "bottom corruption hurts more than top")
REFERENCE_FAILED = "reference failed"  # the verdict where a line's clean cell is itself a convergence failure


def claims(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's three claims judged per model and dataset, from the cells on hand."""
    out = []
    table = scored(table)
    if table.empty:
        return pd.DataFrame(columns=["model", "dataset", "claim", "verdict", "evidence"])
    reinit = reinit_only(table)
    # lines that differ beyond corruption (epochs, pooling...) are judged apart, each under its own name
    for (model, dataset), line in reinit.assign(line=line_names(reinit)).groupby(["line", "dataset"]):
        failed = _value_failed(line)
        if failed[line["side"] == "clean"].any():  # a collapsed reference would judge every claim on noise
            why = _reference_failed(line).iloc[0]
            for claim in CLAIMS:
                out.append((model, dataset, claim, REFERENCE_FAILED, f"not judged: {why}; rerun the clean cell"))
            continue
        # a cell whose value is a convergence failure is no measurement: left out, and named
        g = line[~failed]
        left_out = ", ".join(setting_label(r.side, r.level) for r in line[failed].itertuples())
        first = len(out)
        clean = g[g["side"] == "clean"]
        corrupted = g[g["side"].isin(["bottom", "top", "all"])]
        tol = lambda r: max(float(r.f1_std or 0), 0.5)  # noqa: E731
        # 1. never fully recover
        if len(clean) and len(corrupted):
            c = clean.iloc[0]
            recovered = [r for r in corrupted.itertuples() if r.f1 >= c.f1 - max(float(c.f1_std or 0), 0.0)]
            verdict = "holds" if not recovered else ("fails" if len(recovered) == len(corrupted) else "mixed")
            reached = ", ".join(setting_label(r.side, r.level) for r in recovered)
            ev = f"clean {c.f1:.2f}; " + (f"reached by {reached}" if recovered
                                          else f"best corrupted {corrupted['f1'].max():.2f}")
            out.append((model, dataset, "corrupted models never fully recover", verdict, ev))
        else:
            out.append((model, dataset, "corrupted models never fully recover", "insufficient", "needs clean and corrupted cells"))
        # 2. more corruption, worse
        steps, bad = 0, []
        for side in ("bottom", "top"):
            rows = list(g[g["side"].isin([side, "clean", "all"])].sort_values("level").itertuples())
            for a, b in zip(rows, rows[1:]):
                steps += 1
                if b.f1 > a.f1 + max(tol(a), tol(b)):
                    bad.append(f"{side}: {setting_label(a.side, a.level)} {a.f1:.2f} < "
                               f"{setting_label(b.side, b.level)} {b.f1:.2f}")
        verdict = "insufficient" if steps == 0 else ("holds" if not bad else ("fails" if len(bad) == steps else "mixed"))
        out.append((model, dataset, "more corruption, worse", verdict,
                    f"{steps - len(bad)}/{steps} steps non-increasing" + (f"; exceptions: {'; '.join(bad[:3])}" if bad else "")))
        # 3. bottom worse than top
        pairs = []
        for level, lg in g[g["side"].isin(["bottom", "top"])].groupby("level"):
            b, t = lg[lg["side"] == "bottom"], lg[lg["side"] == "top"]
            if len(b) and len(t):
                pairs.append((level, b.iloc[0].f1, t.iloc[0].f1))
        if pairs:
            wins = [p for p in pairs if p[1] < p[2]]
            verdict = "holds" if len(wins) == len(pairs) else ("fails" if not wins else "mixed")
            ev = "; ".join(f"{int(round(l * 100))}%: bottom {b:.2f} vs top {t:.2f}" for l, b, t in pairs)
            out.append((model, dataset, "bottom corruption hurts more than top", verdict, ev))
        else:
            out.append((model, dataset, "bottom corruption hurts more than top", "insufficient", "needs bottom and top cells"))
        if left_out:
            out[first:] = [(m, d, c, v, f"{e}; left out as convergence failures: {left_out}")
                           for m, d, c, v, e in out[first:]]
    return pd.DataFrame(out, columns=["model", "dataset", "claim", "verdict", "evidence"])


def _paired_p(a: list[float], b: list[float]) -> float:
    from scipy import stats

    diffs = np.subtract(a, b)
    if np.allclose(diffs, diffs[0]):  # no spread: identical differences carry no test; zero means no effect
        return 1.0 if np.isclose(diffs[0], 0) else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def bottom_vs_top_tests(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Paired t-tests of bottom vs top at each level: paired over seeds (per dataset, where >= 3 seeds)
    and paired over datasets (cell means)."""
    rows = []
    sided = scored(table)
    sided = sided[sided["side"].isin(["bottom", "top"])]
    for (model, level), g in sided.groupby(["model", "level"]):
        for dataset, dg in g.groupby("dataset"):
            b, t = dg[dg["side"] == "bottom"], dg[dg["side"] == "top"]
            if not len(b) or not len(t):
                continue
            sb, st = b.iloc[0]["per_seed"], t.iloc[0]["per_seed"]
            common = sorted(set(sb) & set(st))
            if len(common) >= 3:
                rows.append({"model": model, "level": level, "paired_over": f"seeds ({dataset})", "n": len(common),
                             "mean_diff_bottom_minus_top": float(np.mean([sb[s] - st[s] for s in common])),
                             "p_value": _paired_p([sb[s] for s in common], [st[s] for s in common])})
        piv = g.pivot_table(index="dataset", columns="side", values="f1")
        if {"bottom", "top"} <= set(piv.columns):
            piv = piv.dropna()
            if len(piv) >= 3:
                rows.append({"model": model, "level": level, "paired_over": "datasets", "n": len(piv),
                             "mean_diff_bottom_minus_top": float((piv["bottom"] - piv["top"]).mean()),
                             "p_value": _paired_p(list(piv["bottom"]), list(piv["top"]))})
    return pd.DataFrame(rows, columns=["model", "level", "paired_over", "n", "mean_diff_bottom_minus_top", "p_value"])
