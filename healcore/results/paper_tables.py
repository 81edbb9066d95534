"""The paper's Table 1 layout (rows model x level, columns dataset x bottom/top) as CSV, Markdown or LaTeX, with the
training recipe as its caption. Torch-free."""
from __future__ import annotations

import numpy as np
import pandas as pd

from healcore.results import flags
from healcore.results.cell_table import both_panels, line_names, reinit_only


def table1(table: pd.DataFrame, value: str = "f1") -> pd.DataFrame:
    """The paper's Table 1 layout: rows model x corruption level; columns dataset x bottom/top.

    Each cell is a dict {mean, std, failures, surprise, higher} so renderers can mark the higher of bottom/top,
    convergence failures and surprises; 0% (clean) and 100% (all) fill both sides.
    """
    sub = reinit_only(table)
    # where cells differ beyond corruption (pooling, mode, epochs...), each row names what, so none collide
    sub = sub.assign(line=line_names(sub))
    out: dict[tuple, dict] = {}
    for r in sub.itertuples():
        for side in both_panels(r.side):
            out[(r.line, int(round(r.level * 100)), r.dataset, side)] = {
                "mean": getattr(r, value), "std": r.f1_std if value == "f1" else np.nan,
                "failures": int(r.n_failures), "surprise": bool(r.surprises),
                "flagged": bool(getattr(r, "value_flagged", False))}
    if not out:
        return pd.DataFrame()
    index = sorted({(m, l) for (m, l, _, _) in out})
    columns = sorted({(d, s) for (_, _, d, s) in out}, key=lambda x: (x[0], x[1] != "bottom"))
    frame = pd.DataFrame(index=pd.MultiIndex.from_tuples(index, names=["model", "level %"]),
                         columns=pd.MultiIndex.from_tuples(columns, names=["dataset", "side"]), dtype=object)
    for (m, l, d, s), cell in out.items():
        other = out.get((m, l, d, "top" if s == "bottom" else "bottom"))
        cell["higher"] = other is not None and 0 < l < 100 and flags._num(cell["mean"]) and \
            flags._num(other["mean"]) and cell["mean"] > other["mean"]
        frame.at[(m, l), (d, s)] = cell
    return frame


def _fmt(cell, style: str) -> str:
    if not isinstance(cell, dict):
        return ""
    text = ""
    if flags._num(cell.get("mean")):
        text = f"{cell['mean']:.2f}"
        if flags._num(cell.get("std")) and cell["std"] > 0:
            text += f" ± {cell['std']:.2f}" if style != "latex" else f" $\\pm$ {cell['std']:.2f}"
        if cell.get("higher"):
            text = {"markdown": f"**{text}**", "latex": f"\\textbf{{{text}}}", "csv": f"{text} *"}[style]
    if cell.get("failures"):  # the marks of every format, CSV included, are the ones note() explains
        n = cell["failures"]
        text += {"markdown": f" †{n}", "latex": f"$^{{\\dagger {n}}}$", "csv": f" †{n}"}[style]
    if cell.get("flagged"):
        text += {"markdown": " §", "latex": "$^\\S$", "csv": " §"}[style]
    if cell.get("surprise"):
        text += {"markdown": " ‡", "latex": "$^\\ddagger$", "csv": " ‡"}[style]
    return text.strip()


TABLE1_NOTE = ("Bold: the higher of bottom/top at that level. †N: N runs of the cell (any learning rate or seed) "
               "had a convergence failure (crashed or diverged: left out, counted against their learning rate). "
               "§: the value is kept but flagged (the model did not learn, seeds diverged at its learning rate, or a "
               "seed strays from its siblings). ‡: a surprise, a finding rather than a failure (off its neighbours' trend, or above a cell with "
               "less corruption).")


def note(style: str = "markdown") -> str:
    """What the marks of a Table 1 in `style` mean (CSV marks the higher side with * instead of bold)."""
    return TABLE1_NOTE.replace("Bold:", "*:") if style == "csv" else TABLE1_NOTE


def export_table1(table: pd.DataFrame, style: str = "markdown", value: str = "f1", caption: str = "") -> str:
    """Table 1 as CSV, Markdown or LaTeX; bold = higher of bottom/top at that level, † = convergence failures,
    ‡ = surprise. `caption` (e.g. the learning-rate schedule) goes under a Markdown table and into LaTeX's."""
    frame = table1(table, value)
    if frame.empty:
        return ""
    cols = list(frame.columns)
    header = ["model", "level %"] + [f"{d} {s}" for d, s in cols]
    body = [[m, str(l)] + [_fmt(frame.at[(m, l), c], style) for c in cols] for (m, l) in frame.index]
    if style == "csv":
        return pd.DataFrame(body, columns=header).to_csv(index=False)
    if style == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n\n" + (caption + " " if caption else "") + TABLE1_NOTE + "\n"
    if style == "latex":
        datasets = list(dict.fromkeys(d for d, _ in cols))
        spec = "ll" + "".join("cc" for _ in datasets)
        lines = ["\\begin{table}", f"\\caption{{{_tex(caption or 'Weighted F1 after fine-tuning')}}}",
                 f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & & " + " & ".join(f"\\multicolumn{{2}}{{c}}{{{_tex(d)}}}" for d in datasets) + " \\\\",
                 "Model & Level & " + " & ".join("Bottom & Top" for _ in datasets) + " \\\\", "\\midrule"]
        for row in body:
            lines.append(" & ".join([_tex(row[0]), row[1] + "\\%"] + row[2:]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"style {style!r}: use csv, markdown or latex")


def recipe_caption(runs: pd.DataFrame) -> str:
    """How the runs of a table were trained, in one sentence (optimizer, schedule, epochs)."""
    if runs.empty:
        return ""
    schedules = ", ".join(sorted(set(map(str, runs["lr_schedule"]))))
    epochs = ", ".join(str(e) for e in sorted(set(int(e) for e in runs["epochs"])))
    return f"{optimizer_name(runs)}, learning-rate schedule: {schedules}; {epochs} epochs."


def optimizer_name(runs: pd.DataFrame) -> str:
    """Adam when no run decayed its weights (AdamW with weight decay 0 is Adam), else AdamW with the decays."""
    wd = sorted(set(float(w) for w in runs["weight_decay"])) if len(runs) else [0.0]
    return "Adam" if wd == [0.0] else "AdamW (weight decay " + " / ".join(f"{w:g}" for w in wd) + ")"


def _tex(text: str) -> str:
    return str(text).replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")
