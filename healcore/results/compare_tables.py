"""A comparison as a table in the paper's Table 3/4 layout (rows: model and dataset; columns: settings; each cell
"A / B / Δ" with a significance mark), as Markdown, CSV or LaTeX with the test named in the caption; and the
comparisons a report makes of every key that varies in a store. Torch-free.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from healcore.core.errors import HealcoreError
from healcore.core.layers import setting_label
from healcore.results.compare import ALPHA, METRICS, comparable_keys, compare, split, values_of
from healcore.results.keys import as_text

MARK = "*"
FORMATS = ("md", "csv", "latex")


def settings_in_order(result: pd.DataFrame) -> list[str]:
    rank = {"clean": 0, "bottom": 1, "top": 2, "all": 3}
    pairs = sorted({(float(l), rank.get(s, 4), setting_label(s, float(l))) for s, l in zip(result["side"],
                                                                                             result["level"])})
    return list(dict.fromkeys(label for _, _, label in pairs))


def cell_text(r: dict, digits: int = 2) -> str:
    """A / B / Δ of one aligned cell, with * where significant after correction; why a cell has no difference."""
    def num(x):
        return f"{x:.{digits}f}" if isinstance(x, (int, float, np.floating)) and np.isfinite(x) else "–"

    if r["status"]:
        shown = {"only in A": f"{num(r['a'])} / – (only in A)", "only in B": f"– / {num(r['b'])} (only in B)"}
        return shown.get(r["status"], f"{num(r['a'])} / {num(r['b'])} ({r['status']})")
    return f"{num(r['a'])} / {num(r['b'])} / {r['delta']:+.{digits}f}" + (MARK if r["significant"] else "")


def table_of(result: pd.DataFrame) -> pd.DataFrame:
    """Rows: (model, dataset); columns: settings from the least to the most corruption."""
    rows = {}
    for r in result.to_dict("records"):
        model = r.get("model") if r.get("model") is not None else f"{r.get('model_a')} vs {r.get('model_b')}"
        rows.setdefault((str(model), r["dataset"]), {})[setting_label(r["side"], float(r["level"]))] = cell_text(r)
    columns = settings_in_order(result)
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).fillna("")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["model", "dataset"])
    return frame


def caption(result: pd.DataFrame) -> str:
    """The table's caption: what A and B are, what a cell holds, the tests and the correction."""
    a, b, metric = result.attrs["a"], result.attrs["b"], result.attrs["metric"]
    tests = sorted({t.split(" over ")[0].split(" (")[0] for t in result["test"] if "t-test" in t and "no test" not in t})
    tested = int(result["p"].notna().sum())
    text = (f"A: {a}; B: {b}. Each cell: A / B / A − B of the {METRICS[metric]}"
            + (" as a share (%) of each side's own clean cell" if result.attrs.get("relative") else "")
            + ", each side at its own best learning rate per cell. "
            + (f"{MARK}: significant at α = {ALPHA} after {result.attrs['correction']} correction over the "
               f"{tested} cells tested ({'; '.join(tests)})." if tested else "No cell could be tested.")
            + " Cells without a mark: not significant, or no test (one seed on a side, or no spread between seeds).")
    notes = result.attrs.get("notes") or []
    return text + (" " + " ".join(n[0].upper() + n[1:] + "." for n in notes) if notes else "")


def export(result: pd.DataFrame, style: str = "md") -> str:
    if style not in FORMATS:
        raise ValueError(f"style {style!r}: use {', '.join(FORMATS)}")
    frame = table_of(result)
    cap = caption(result)
    if style == "csv":
        return frame.reset_index().to_csv(index=False)
    if style == "md":
        header = ["model", "dataset", *frame.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([m, d, *row]) + " |" for (m, d), row in zip(frame.index, frame.to_numpy())]
        return "\n".join(lines) + "\n\n" + cap + "\n"
    def tex(text: str) -> str:
        return str(text).replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("−", "$-$")

    lines = ["\\begin{table}", f"\\caption{{{tex(cap)}}}", "\\begin{tabular}{ll" + "c" * len(frame.columns) + "}",
             "\\toprule", "Model & Dataset & " + " & ".join(tex(c) for c in frame.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join([tex(m), tex(d), *[tex(x) for x in row]]) + " \\\\"
              for (m, d), row in zip(frame.index, frame.to_numpy())]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ a store's comparisons
def store_comparisons(table: pd.DataFrame, runs: pd.DataFrame, root: str, correction: str = "holm") \
        -> list[tuple[str, str, pd.DataFrame]]:
    """For every key that varies in a store: its first value (A) against each other (B), every other varying key
    fixed at its most common value. (key, what was fixed, the comparison) each."""
    out = []
    for key in comparable_keys(table):
        others = [k for k in comparable_keys(table) if k != key]
        fixed = table
        held = []
        for k in others:
            common = as_text(fixed[k]).value_counts()
            if len(common):
                value = common.index[0]
                fixed = fixed[as_text(fixed[k]) == value]
                held.append(f"{k} {value}")
        values = values_of(fixed, key)
        for b in values[1:]:
            try:
                a_side, b_side = split(fixed, runs, key, values[0], b, root)
                result = compare(a_side, b_side, key, correction=correction)
            except HealcoreError:  # a pair whose cells fall on one spot (a key not fixed) is left out
                continue
            if len(result):
                out.append((key, ", ".join(held), result))
    return out
