"""The store as tidy tables: runs, epochs, grid cells, convergence flags, the paper's claims, exports.

Torch-free: the dashboard imports this and opens in a couple of seconds.

Definitions
- level: fraction of the encoder's layers corrupted (k/L); side: bottom, top, all (k = L), clean (k = 0).
- cell: every run sharing model, dataset, corruption setting, pooling, mode and method; its learning rate
  is the one with the best mean selection score over seeds (validation by default), and the cell reports
  mean ± std over seeds of the best-epoch test score at that learning rate.
- healing: best test F1 minus the pre-fine-tuning probe F1 (logistic regression on frozen features).
- recovery ratio: (F1_cell - F1_all) / (F1_clean - F1_all), with "all" the 100%-corrupted cell.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .config import NON_IDENTITY_FIELDS, RunConfig
from .store import RunStore, effective_state, epoch_rows, read_json

# A cell is every run that differs only in learning rate and seed (and in how or where it executed).
_NOT_CELL = {"lr", "seed", "corrupt", "feature_samples", "probe_samples", *NON_IDENTITY_FIELDS}
CELL_KEYS = ["model", "dataset", "side", "n_layers", "level"] + [
    f.name for f in dataclasses.fields(RunConfig) if f.name not in _NOT_CELL | {"model", "dataset"}]
METRIC_COLUMNS = {"f1_weighted": "test_f1_weighted", "f1_macro": "test_f1_macro", "accuracy": "test_accuracy",
                  "healing": "healing", "recovery": "recovery"}
COLLAPSE_MARGIN = 1.0  # F1 points above the majority-class F1 that still count as "predicts one class"


def _side_of(layers: list[int], L: int) -> tuple[str, int]:
    k = len(layers)
    if k == 0:
        return "clean", 0
    if k == L:
        return "all", k
    if layers == list(range(1, k + 1)):
        return "bottom", k
    if layers == list(range(L - k + 1, L + 1)):
        return "top", k
    return "custom", k


def load_runs(root: str | Path) -> pd.DataFrame:
    """One row per run folder: config, state, corruption level, best metrics, probe, flags."""
    store = RunStore(root)
    rows = []
    defaults = RunConfig().to_dict()  # runs written before a config key existed read as its default
    for run_id in store.run_ids():
        d = store.root / run_id
        config = {**defaults, **(read_json(d / "config.json") or {})}
        status = read_json(d / "status.json", {}) or {}
        summary = read_json(d / "summary.json") or {}
        row = {"run_id": run_id, **config, "state": effective_state(status), "error": status.get("error"),
               "started": status.get("started"), "ended": status.get("ended"),
               "progress_epoch": (status.get("progress") or {}).get("epoch")}
        corruption = summary.get("corruption") or {}
        L = corruption.get("num_layers")
        if L:
            row["num_layers"] = L
            row["side"], row["n_layers"] = _side_of(corruption.get("layers", []), L)
            row["level"] = row["n_layers"] / L
        best = summary.get("best") or {}
        for split in ("validation", "test"):
            for k in ("accuracy", "f1_weighted", "f1_macro"):
                row[f"{split[:4] if split == 'validation' else split}_{k}"] = (best.get(split) or {}).get(k)
        row["best_on_test"] = summary.get("best_on_test")
        row["best_epoch"] = summary.get("best_epoch")
        row["probe_f1"] = (summary.get("probe") or {}).get("f1_weighted")
        row["healing"] = summary.get("healing")
        row["majority_f1"] = summary.get("majority_f1")
        losses = summary.get("losses") or []
        row["first_loss"] = losses[0] if losses else None
        row["final_loss"] = losses[-1] if losses else None
        timing = summary.get("timing") or {}
        for k in ("train_s", "eval_s", "tokens_per_s", "tokens_per_epoch"):
            row[k] = timing.get(k)
        row["device"] = summary.get("device")
        row["hardware"] = summary.get("hardware")  # e.g. "NVIDIA H100 80GB HBM3"; absent in runs before it was kept
        row["has_features"] = (d / "features" / "best.npz").is_file()  # stores copied between machines may lack them
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["run_id", "state", "model", "dataset", "side", "n_layers", "level", "has_features"])
    for col in ("side", "n_layers", "level", "num_layers"):
        if col not in df:
            df[col] = np.nan
    df["flags"] = [run_flags(r) for _, r in df.iterrows()]
    df["flagged"] = df["flags"].map(bool)
    return df


def run_flags(r) -> list[str]:
    """Why a run is suspect: collapse to the majority class, a loss that did not fall, a failure."""
    flags = []
    if r.get("state") == "failed":
        err = str(r.get("error") or "")
        flags.append("diverged (NaN/inf loss)" if "NaN" in err or "nan" in err or "inf" in err else f"failed: {err[:80]}")
    f1, maj = r.get("test_f1_weighted"), r.get("majority_f1")
    if _num(f1) and _num(maj) and f1 <= maj + COLLAPSE_MARGIN:
        flags.append(f"collapsed: F1 {f1:.2f} <= majority-class F1 {maj:.2f} (one class predicted)")
    first, last = r.get("first_loss"), r.get("final_loss")
    if _num(first) and _num(last) and (r.get("epochs") or 0) >= 2 and last >= first * 0.98:
        flags.append(f"loss not decreasing ({first:.3f} -> {last:.3f})")
    return flags


def _num(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def load_epochs(root: str | Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run and finished epoch: train loss, validation and test metrics."""
    store = RunStore(root)
    rows = []
    for run_id in run_ids if run_ids is not None else store.run_ids():
        for e in epoch_rows(store.root / run_id / "metrics.jsonl"):
            row = {"run_id": run_id, "epoch": e["epoch"], "train_loss": e.get("train_loss"),
                   "train_s": e.get("train_s"), "eval_s": e.get("eval_s")}
            for split in ("validation", "test"):
                for k in ("accuracy", "f1_weighted", "f1_macro"):
                    row[f"{split}_{k}"] = (e.get(split) or {}).get(k)
            rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "epoch", "train_loss", "train_s", "eval_s"] +
                        [f"{s}_{k}" for s in ("validation", "test") for k in ("accuracy", "f1_weighted", "f1_macro")])


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Grid cells with the best learning rate kept; mean ± std over seeds; healing, recovery, flags."""
    done = runs[(runs["state"] == "completed")].copy() if len(runs) else runs
    if done.empty or "test_f1_weighted" not in done:
        return pd.DataFrame(columns=CELL_KEYS + ["lr", "n_seeds", "f1", "f1_std"])
    keys = [k for k in CELL_KEYS if k in done.columns]
    done = done.assign(**{k: done[k].astype(object).where(done[k].notna(), "-") for k in keys})
    done["select_score"] = [r["vali_" + r["metric"]] if r["select_on"] == "validation" and _num(r.get("vali_" + r["metric"]))
                            else r["test_" + r["metric"]] for _, r in done.iterrows()]
    out = []
    for key, group in done.groupby(keys, dropna=False, sort=True):
        by_lr = group.groupby("lr")["select_score"].mean()
        best_lr = by_lr.idxmax()
        g = group[group["lr"] == best_lr]
        rec = dict(zip(keys, key))
        rec.update(lr=best_lr, lrs_tried=len(by_lr), n_seeds=len(g), seeds=sorted(g["seed"].tolist()),
                   f1=g["test_f1_weighted"].mean(), f1_std=g["test_f1_weighted"].std(ddof=1) if len(g) > 1 else 0.0,
                   f1_macro=g["test_f1_macro"].mean(), accuracy=g["test_accuracy"].mean(),
                   best_on_test=g["best_on_test"].mean(), probe_f1=g["probe_f1"].mean(),
                   healing=g["healing"].mean(), majority_f1=g["majority_f1"].mean(),
                   flags=sorted({f for fl in g["flags"] for f in fl}), run_ids=g["run_id"].tolist(),
                   per_seed=dict(zip(g["seed"].tolist(), g["test_f1_weighted"].tolist())))
        out.append(rec)
    table = pd.DataFrame(out)
    table["recovery"] = _recovery(table)
    _trend_flags(table)
    table["flagged"] = table["flags"].map(bool)
    return table


def _group_keys(table: pd.DataFrame) -> list[str]:
    """What a degradation line shares: everything in a cell's key but the corruption setting itself."""
    corruption = {"side", "n_layers", "level", "method", "strength", "scope", "init", "corrupt_embeddings",
                  "corrupt_pooler"}
    return [k for k in CELL_KEYS if k not in corruption and k in table.columns]


def line_names(table: pd.DataFrame) -> pd.Series:
    """Per cell, its model's name plus, in brackets, what sets its line apart from the table's other lines of
    the same model and dataset: the non-corruption keys that take several values in the table (pooling and mode
    bare, others as "key value"). Just the model when nothing varies; tables and claims use it so that, say, a
    6-epoch and a 16-epoch clean cell are never compared as one line."""
    keys = [k for k in _group_keys(table) if k not in ("model", "dataset")]
    varying = [k for k in keys if table[k].astype(str).nunique() > 1]
    labels = [", ".join(str(getattr(r, k)) if k in ("pooling", "mode") else f"{k} {getattr(r, k)}" for k in varying)
              for r in table.itertuples()]
    return pd.Series([f"{m} [{lab}]" if lab else m for m, lab in zip(table["model"], labels)], index=table.index,
                     dtype=object)


def _recovery(table: pd.DataFrame) -> pd.Series:
    rec = pd.Series(np.nan, index=table.index)
    for _, g in table.groupby(_group_keys(table), dropna=False):
        clean = g[g["side"] == "clean"]["f1"]
        full = g[(g["side"] == "all") & (g["method"].isin(["reinit", "-"]))]["f1"]
        if len(clean) and len(full) and clean.iloc[0] != full.iloc[0]:
            rec[g.index] = (g["f1"] - full.iloc[0]) / (clean.iloc[0] - full.iloc[0])
    return rec


def _trend_flags(table: pd.DataFrame) -> None:
    """A cell far off the line between its neighbouring levels, beyond its seed spread, is flagged."""
    sided = table[table["side"].isin(["bottom", "top"])]
    for _, g in sided.groupby(_group_keys(table) + ["side", "method"], dropna=False):
        clean, full = _endpoints(table, g)
        seq = [r for r in [clean, *g.sort_values("level").itertuples(), full] if r is not None]
        dev = [0.0] * len(seq)
        for i in range(1, len(seq) - 1):
            prev, cur, nxt = seq[i - 1], seq[i], seq[i + 1]
            expected = prev.f1 + (nxt.f1 - prev.f1) * (cur.level - prev.level) / max(1e-9, nxt.level - prev.level)
            if (cur.f1 - prev.f1) * (cur.f1 - nxt.f1) > 0:  # a spike or a dip, not a steep slope
                dev[i] = abs(cur.f1 - expected)
        for i in range(1, len(seq) - 1):
            cur = seq[i]
            spread = max(2 * float(cur.f1_std or 0), 5.0)
            # the neighbours of a single bad point look off too; flag only the worst of each run
            if cur.side in ("bottom", "top") and dev[i] > spread and dev[i] >= max(dev[i - 1], dev[i + 1]):
                table.at[cur.Index, "flags"] = sorted(set(table.at[cur.Index, "flags"]) | {
                    f"off trend: {cur.f1:.2f}, {dev[i]:.2f} from the line between neighbouring levels "
                    f"(spread {spread:.2f})"})


def _endpoints(table: pd.DataFrame, g: pd.DataFrame):
    keys = _group_keys(table)
    first = g.iloc[0]
    mask = np.ones(len(table), dtype=bool)
    for k in keys:
        mask &= (table[k] == first[k]).to_numpy()
    clean = table[mask & (table["side"] == "clean").to_numpy()]
    full = table[mask & (table["side"] == "all").to_numpy() & (table["method"] == first["method"]).to_numpy()]
    return (next(clean.itertuples(), None), next(full.itertuples(), None))


# ------------------------------------------------------------------------------------------ plateau
PLATEAU_POINTS = 1.0  # a clean model whose last third of epochs still adds this much validation F1 was cut short


def clean_run_ids(table: pd.DataFrame) -> list[str]:
    """The runs behind the clean cells: the epochs plateau() needs (not every run's)."""
    return [i for ids in table[table["side"] == "clean"]["run_ids"] for i in ids]


def plateau(table: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Did training run long enough? Per clean cell: the validation F1 curve (mean over its seeds, at the cell's
    learning rate) and how much the last third of the epochs added over the best before it."""
    rows = []
    for r in table[table["side"] == "clean"].itertuples():
        curve = epochs[epochs["run_id"].isin(r.run_ids)].groupby("epoch")["validation_f1_weighted"].mean().dropna()
        if len(curve) < 3:
            continue
        cut = curve.index.max() - len(curve) // 3  # epochs after `cut` are the last third
        gain = float(curve[curve.index > cut].max() - curve[curve.index <= cut].max())
        rows.append({"model": r.model, "dataset": r.dataset, "lr": r.lr, "seeds": r.n_seeds,
                     "validation F1 by epoch": " ".join(f"{v:.1f}" for v in curve),
                     "best epoch": int(curve.idxmax()), "last-third gain": gain,
                     "verdict": "plateaued" if gain < PLATEAU_POINTS else "still rising"})
    return pd.DataFrame(rows, columns=["model", "dataset", "lr", "seeds", "validation F1 by epoch", "best epoch",
                                       "last-third gain", "verdict"])


# ------------------------------------------------------------------------------------------ claims
def claims(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's three claims judged per model and dataset, from the cells on hand."""
    out = []
    if table.empty:
        return pd.DataFrame(columns=["model", "dataset", "claim", "verdict", "evidence"])
    reinit = table[table["method"].isin(["reinit", "-"])]
    # lines that differ beyond corruption (epochs, pooling...) are judged apart, each under its own name
    for (model, dataset), g in reinit.assign(line=line_names(reinit)).groupby(["line", "dataset"]):
        clean = g[g["side"] == "clean"]
        corrupted = g[g["side"].isin(["bottom", "top", "all"])]
        tol = lambda r: max(float(r.f1_std or 0), 0.5)  # noqa: E731
        # 1. never fully recover
        if len(clean) and len(corrupted):
            c = clean.iloc[0]
            recovered = [r for r in corrupted.itertuples() if r.f1 >= c.f1 - max(float(c.f1_std or 0), 0.0)]
            verdict = "holds" if not recovered else ("fails" if len(recovered) == len(corrupted) else "mixed")
            ev = f"clean {c.f1:.2f}; " + (f"reached by {', '.join(_label(r) for r in recovered)}" if recovered
                                          else f"best corrupted {corrupted['f1'].max():.2f}")
            out.append((model, dataset, "corrupted models never fully recover", verdict, ev))
        else:
            out.append((model, dataset, "corrupted models never fully recover", "insufficient", "needs clean and corrupted cells"))
        # 2. more corruption, worse
        steps, bad = 0, []
        for side in ("bottom", "top"):
            line = g[g["side"].isin([side, "clean", "all"])].sort_values("level")
            rows = list(line.itertuples())
            for a, b in zip(rows, rows[1:]):
                steps += 1
                if b.f1 > a.f1 + max(tol(a), tol(b)):
                    bad.append(f"{side}: {_label(a)} {a.f1:.2f} < {_label(b)} {b.f1:.2f}")
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
    return pd.DataFrame(out, columns=["model", "dataset", "claim", "verdict", "evidence"])


def _label(r) -> str:
    if r.side == "clean":
        return "clean"
    return f"{r.side} {int(round(r.level * 100))}%"


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
    sided = table[table["side"].isin(["bottom", "top"])]
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


# ------------------------------------------------------------------------------------------ exports
def table1(table: pd.DataFrame, value: str = "f1") -> pd.DataFrame:
    """The paper's Table 1 layout: rows model x corruption level; columns dataset x bottom/top.

    Each cell is a dict {mean, std, flagged, higher} so renderers can mark the higher of bottom/top and
    failures; 0% (clean) and 100% (all) fill both sides.
    """
    sub = table[table["method"].isin(["reinit", "-"])]
    # where cells differ beyond corruption (pooling, mode, epochs...), each row names what, so none collide
    sub = sub.assign(line=line_names(sub))
    out: dict[tuple, dict] = {}
    for r in sub.itertuples():
        model = r.line
        sides = ["bottom", "top"] if r.side in ("clean", "all") else [r.side]
        for side in sides:
            if side not in ("bottom", "top"):
                continue
            out[(model, int(round(r.level * 100)), r.dataset, side)] = {
                "mean": getattr(r, value), "std": r.f1_std if value == "f1" else np.nan, "flagged": bool(r.flagged)}
    if not out:
        return pd.DataFrame()
    index = sorted({(m, l) for (m, l, _, _) in out})
    columns = sorted({(d, s) for (_, _, d, s) in out}, key=lambda x: (x[0], x[1] != "bottom"))
    frame = pd.DataFrame(index=pd.MultiIndex.from_tuples(index, names=["model", "level %"]),
                         columns=pd.MultiIndex.from_tuples(columns, names=["dataset", "side"]), dtype=object)
    for (m, l, d, s), cell in out.items():
        other = out.get((m, l, d, "top" if s == "bottom" else "bottom"))
        cell["higher"] = other is not None and 0 < l < 100 and _num(cell["mean"]) and _num(other["mean"]) and \
            cell["mean"] > other["mean"]
        frame.at[(m, l), (d, s)] = cell
    return frame


def _fmt(cell, style: str) -> str:
    if not isinstance(cell, dict) or not _num(cell.get("mean")):
        return ""
    text = f"{cell['mean']:.2f}"
    if _num(cell.get("std")) and cell["std"] > 0:
        text += f" ± {cell['std']:.2f}" if style != "latex" else f" $\\pm$ {cell['std']:.2f}"
    if cell.get("higher"):
        text = {"markdown": f"**{text}**", "latex": f"\\textbf{{{text}}}", "csv": f"{text} *"}[style]
    if cell.get("flagged"):
        text += {"markdown": " †", "latex": "$^\\dagger$", "csv": " (flagged)"}[style]
    return text


def export_table1(table: pd.DataFrame, style: str = "markdown", value: str = "f1") -> str:
    """Table 1 as CSV, Markdown or LaTeX; bold = higher of bottom/top at that level, † = flagged cell."""
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
        return "\n".join(lines) + ("\n\nBold: the higher of bottom/top at that level. †: flagged (collapse, divergence, "
                                   "flat loss or off trend; the runs and reasons are listed with the flags).\n")
    if style == "latex":
        datasets = list(dict.fromkeys(d for d, _ in cols))
        spec = "ll" + "".join("cc" for _ in datasets)
        lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & & " + " & ".join(f"\\multicolumn{{2}}{{c}}{{{_tex(d)}}}" for d in datasets) + " \\\\",
                 "Model & Level & " + " & ".join("Bottom & Top" for _ in datasets) + " \\\\", "\\midrule"]
        for row in body:
            lines.append(" & ".join([_tex(row[0]), row[1] + "\\%"] + row[2:]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"style {style!r}: use csv, markdown or latex")


def _tex(text: str) -> str:
    return str(text).replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")
