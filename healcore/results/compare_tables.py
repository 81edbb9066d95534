"""A comparison as a table in the paper's Table 3/4 layout (rows: model, dataset and the experiment; columns:
settings; each cell "A / B / Δ" with a significance mark), as Markdown, CSV or LaTeX with the test named in the
caption; as a tidy table (one row per aligned cell, its settings as columns, then A, B, n, sd, A − B, the test, p and
corrected p) for pandas or R; and the comparisons a report makes of every setting that compares in a store.
Torch-free.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from healcore.core.errors import HealcoreError
from healcore.core.layers import setting_label
from healcore.results.compare import ALPHA, METRICS, comparable_keys, compare, pairings, split, values_of
from healcore.results.keys import lr_text, side_rank, text_of

MARK = "*"
FORMATS = ("md", "csv", "latex", "tidy")


def settings_in_order(result: pd.DataFrame) -> list[str]:
    pairs = sorted({(float(l), side_rank(s), setting_label(s, float(l))) for s, l in zip(result["side"],
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


def model_of(r: dict) -> str:
    return str(r.get("model")) if r.get("model") is not None else f"{r.get('model_a')} vs {r.get('model_b')}"


def table_of(result: pd.DataFrame) -> pd.DataFrame:
    """Rows: (model, dataset, experiment: the settings that set a row apart, in words); columns: settings from the
    least to the most corruption. Each row holds one experiment of each side, never cells of two."""
    rows: dict[tuple, dict] = {}
    for r in result.to_dict("records"):
        row = rows.setdefault((model_of(r), r["dataset"], r.get("experiment") or ""), {})
        column = setting_label(r["side"], float(r["level"]))
        if column in row:  # two aligned cells of one row on one column: the experiment's keys missed a setting
            raise ValueError(f"two cells of row {model_of(r)} {r['dataset']} {r.get('experiment')!r} at {column}")
        row[column] = cell_text(r)
    columns = settings_in_order(result)
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).fillna("")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["model", "dataset", "experiment"])
    return frame


TIDY_SIDE = ("value", "n", "std", "lr")  # each side's columns in the tidy table: a_value, a_n, a_std, a_lr


def tidy(result: pd.DataFrame) -> pd.DataFrame:
    """One row per aligned cell: its settings as columns (model, dataset, the row's settings, side, level, setting),
    then A, B, each side's n, sd and kept learning rate, A − B, the test, p, corrected p, significance and status."""
    settings = ["dataset", *result.attrs.get("row_settings", [])]
    out = pd.DataFrame({"model": [model_of(r) for r in result.to_dict("records")]}, index=result.index)
    for k in settings:
        out[k] = result[k].map(text_of) if k in result else ""
    out["side"], out["level"] = result["side"], result["level"].astype(float)
    out["setting"] = [setting_label(s, float(l)) for s, l in zip(result["side"], result["level"])]
    for s in ("a", "b"):
        out[f"{s}_value"], out[f"{s}_n"] = result[s], result[f"{s}_n"]
        out[f"{s}_std"] = pd.to_numeric(result[f"{s}_std"], errors="coerce").where(result[f"{s}_n"] > 0)
        out[f"{s}_lr"] = result[f"{s}_lr"].map(lr_text)
    for k in ("delta", "test", "p", "p_adj", "significant", "status"):
        out[k] = result[k]
    out.attrs.update(result.attrs)
    return out.reset_index(drop=True)


def caption(result: pd.DataFrame, mark: str = MARK) -> str:
    """The comparison's caption, on every page, in the report and the CLI alike: what A and B are, what a cell
    holds, the tests and the correction, how much power the seeds give, and which cells are no measurement."""
    a, b, metric = result.attrs["a"], result.attrs["b"], result.attrs["metric"]
    tests = sorted({t.split(" over ")[0].split(" (")[0] for t in result["test"] if "t-test" in t and "no test" not in t})
    tested = int(result["p"].notna().sum())
    significant = int(result["significant"].sum()) if "significant" in result else 0
    parts = [f"A: {a}; B: {b}. Each cell: A / B / A − B of the {METRICS[metric]}"
             + (" as a share (%) of each side's own clean cell (two different models)"
                if result.attrs.get("relative") else "")
             + ", each side at its own best learning rate per cell.",
             (f"{mark}: significant at α = {ALPHA} after {result.attrs['correction']} correction over the "
              f"{tested} cells tested ({'; '.join(tests)}): {significant} cell(s)." if tested
              else "No cell could be tested."),
             "Cells without a mark: not significant, or no test (one seed on a side, or no spread between seeds)."]
    parts += [power_note(result)] if tested else []
    parts += [n[0].upper() + n[1:] + "." for n in result.attrs.get("notes") or []]
    odd = result[result["status"] != ""]["status"].value_counts()
    if len(odd):
        parts.append("No measurement in: " + ", ".join(f"{n} cell(s) {s}" for s, n in odd.items()) + ".")
    return " ".join(p for p in parts if p)


def power_note(result: pd.DataFrame) -> str:
    """What the seeds can show: with 2 seeds a paired test has 1 degree of freedom (the |t| the correction needs is
    said), and how many seeds the observed spread would need for 80% power."""
    from scipy import stats

    tested = result[result["p"].notna()]
    m = len(tested)
    if not m:
        return ""
    n = tested["test"].str.extract(r"over (\d+) seeds")[0].astype(float).min()
    text = ""
    if n == 2:
        t_needed = stats.t.ppf(1 - ALPHA / (2 * m), 1)
        text = (f"With 2 paired seeds a t-test has 1 degree of freedom: after correcting over {m} cell(s) it needs "
                f"|t| > {t_needed:.1f}, so it can hardly ever be significant.")
    unclear = tested[~tested["significant"]]["seeds_needed"].dropna() if "seeds_needed" in tested else []
    if len(unclear):
        text += (f" At the spread observed, the cells not significant would need a median of "
                 f"{int(np.median(unclear))} paired seeds each for 80% power.")
    return text.strip()


def export(result: pd.DataFrame, style: str = "md") -> str:
    if style not in FORMATS:
        raise ValueError(f"style {style!r}: use {', '.join(FORMATS)}")
    if style == "tidy":
        return tidy(result).to_csv(index=False)
    frame = table_of(result)
    cap = caption(result)
    with_experiment = any(frame.index.get_level_values("experiment"))  # a column only where rows need it
    names = ["model", "dataset", *(["experiment"] if with_experiment else [])]
    heads = [(m, d, *([e] if with_experiment else [])) for m, d, e in frame.index]
    if style == "csv":
        flat = frame.reset_index()
        return (flat if with_experiment else flat.drop(columns="experiment")).to_csv(index=False)
    if style == "md":
        header = [*names, *frame.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([*h, *row]) + " |" for h, row in zip(heads, frame.to_numpy())]
        return "\n".join(lines) + "\n\n" + cap + "\n"
    def tex(text: str) -> str:
        return str(text).replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("−", "$-$")

    lines = ["\\begin{table}", f"\\caption{{{tex(cap)}}}",
             "\\begin{tabular}{" + "l" * len(names) + "c" * len(frame.columns) + "}",
             "\\toprule", " & ".join(n.capitalize() for n in names) + " & " + " & ".join(tex(c) for c in frame.columns)
             + " \\\\", "\\midrule"]
    lines += [" & ".join([*(tex(x) for x in h), *[tex(x) for x in row]]) + " \\\\"
              for h, row in zip(heads, frame.to_numpy())]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ a store's comparisons
def store_comparisons(table: pd.DataFrame, runs: pd.DataFrame, root: str, correction: str = "holm") \
        -> list[tuple[str, str, pd.DataFrame]]:
    """For every setting that compares in a store, each pair of its values that share an experiment, over the whole
    store: every row one experiment of each side (the other settings are the rows' labels). (key, "", the
    comparison) each; the middle item is kept for callers that name settings held fixed (none are)."""
    out = []
    for key in comparable_keys(table):
        paired = pairings(table, key)
        values = values_of(table, key)  # in natural order: each pair once, the smaller value as A
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                if b not in paired.get(a, set()):
                    continue
                try:
                    a_side, b_side = split(table, runs, key, a, b, root)
                    result = compare(a_side, b_side, key, correction=correction)
                except HealcoreError:  # a pair whose cells fall on one spot (custom layers of one size) is left out
                    continue
                if len(result):
                    out.append((key, "", result))
    return out
