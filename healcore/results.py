"""The store as tidy tables: runs, epochs, grid cells, the paper's claims, plateau checks, exports.

Torch-free: the dashboard imports this and opens in a couple of seconds.

Definitions
- level: fraction of the encoder's layers corrupted (k/L); side: bottom, top, all (k = L), clean (k = 0).
- cell: every run sharing model, dataset, corruption setting, pooling, mode, method and training settings; its
  learning rate is the one with the best mean selection score over seeds (validation by default), and the cell
  reports mean ± std over seeds of the best-epoch test score at that learning rate. A cell exists as soon as one
  of its runs does (queued, running or failed ones too), so nothing a grid does is a gap.
- healing: best test F1 minus the pre-fine-tuning probe F1 (logistic regression on frozen features).
- recovery ratio: (F1_cell - F1_all) / (F1_clean - F1_all), with "all" the 100%-corrupted cell.
- convergence failures (per run) and surprises (per cell): flags.py.
- dataset: a registry name, or a folder's name when a folder was given (its full path is `dataset_path`).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import flags
from .config import LEGACY_VALUES, NON_IDENTITY_FIELDS, RunConfig
from .corruption import parse_layers, setting_label  # noqa: F401 - pages and charts read it from here
from .errors import HealcoreError
from .store import RunStore, grid_records

# A cell is every run that differs only in learning rate and seed (and in how or where it executed).
_NOT_CELL = {"lr", "seed", "corrupt", "feature_samples", "probe_samples", *NON_IDENTITY_FIELDS}
CELL_KEYS = ["model", "dataset", "side", "n_layers", "level"] + [
    f.name for f in dataclasses.fields(RunConfig) if f.name not in _NOT_CELL | {"model", "dataset"}]
CONFIG_KEYS = [f.name for f in dataclasses.fields(RunConfig)]
CORRUPTION_KEYS = {"side", "n_layers", "level", "method", "strength", "scope", "init", "corrupt_embeddings",
                   "corrupt_pooler"}
SPLIT_METRICS = [f"{s}_{k}" for s in ("validation", "test") for k in ("accuracy", "f1_weighted", "f1_macro")]
# The runs table's columns, whatever the store holds (empty, queued only, finished): readers never meet a missing one.
RUN_COLUMNS = (["run_id", *CONFIG_KEYS, "state", "error", "started", "ended", "attempt", "progress", "damaged",
                "num_layers", "side", "n_layers", "level", *SPLIT_METRICS, "best_on_test", "best_epoch", "probe_f1",
                "healing", "majority_f1", "first_loss", "final_loss", "train_s", "eval_s", "tokens_per_s",
                "tokens_per_epoch", "hardware", "has_features", "has_analysis", "grid"])  # device: the config's, then
# the one a finished run names in its summary


def side_of(layers: list[int], L: int) -> tuple[str, int]:
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


def as_text(values: pd.Series) -> pd.Series:
    """Values as strings for grouping, filtering and labels, a missing one as "-" (pandas' astype(str) keeps
    missing values missing, and a group key or a join then drops or breaks on them)."""
    return values.map(lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def reinit_only(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's corruption: re-initialised cells and the clean cells they are compared with."""
    return table[table["method"].isin(["reinit", "-"])]


# ------------------------------------------------------------------------------------------ runs
def load_runs(root: str | Path, include_queued: bool = True) -> pd.DataFrame:
    """One row per run folder (plus, while a grid runs, one per run it has not started): config, state, where
    its corruption places it, best metrics, probe, damaged files, convergence failures."""
    store = RunStore(root)
    defaults = {**RunConfig().to_dict(), **LEGACY_VALUES}  # keys added later read as what older runs used
    rows = [_run_row(store, store.read(run_id), defaults) for run_id in store.run_ids()]
    if include_queued:
        rows += _queued_rows(store, {r["run_id"] for r in rows}, defaults)
    df = pd.DataFrame(rows)
    df = df.reindex(columns=RUN_COLUMNS + [c for c in df.columns if c not in RUN_COLUMNS])
    if df.empty:
        return df.assign(dataset_path=pd.Series(dtype=object), failures=pd.Series(dtype=object),
                         failed=pd.Series(dtype=bool))
    for col in ("has_features", "has_analysis"):  # queued runs have no files
        df[col] = df[col].map(lambda v: v is True)
    df = _place_unfinished(df)
    df["dataset_path"] = df["dataset"]
    df["dataset"] = df["dataset"].map(dataset_labels(df["dataset"]))
    return flags.with_failures(df, CELL_KEYS)


def _run_row(store: RunStore, stored, defaults: dict) -> dict:
    config = {**defaults, **(stored.config or {})}
    status, summary = stored.status, stored.summary or {}
    progress = status.get("progress") if isinstance(status.get("progress"), dict) else {}
    row = {"run_id": stored.run_id, **config, "state": stored.state, "error": status.get("error"),
           "started": status.get("started"), "ended": status.get("ended"), "attempt": status.get("attempt"),
           "progress": progress, "damaged": stored.damaged}
    corruption = summary.get("corruption") or {}
    L = corruption.get("num_layers") or status.get("num_layers")
    layers = corruption.get("layers") if corruption.get("num_layers") else status.get("layers")
    if isinstance(L, int) and L > 0 and isinstance(layers, list):
        row["num_layers"] = L
        row["side"], row["n_layers"] = side_of(layers, L)
        row["level"] = row["n_layers"] / L
    best = summary.get("best") or {}
    for split in ("validation", "test"):
        for k in ("accuracy", "f1_weighted", "f1_macro"):
            row[f"{split}_{k}"] = (best.get(split) or {}).get(k)
    row["best_on_test"] = summary.get("best_on_test")
    row["best_epoch"] = summary.get("best_epoch")
    row["probe_f1"] = (summary.get("probe") or stored.probe or {}).get("f1_weighted")
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
    files = store.files(stored.run_id)
    row["has_features"] = files.features("best").is_file()  # stores copied between machines may lack them
    row["has_analysis"] = files.analysis.is_file()
    return row


def _queued_rows(store: RunStore, present: set[str], defaults: dict) -> list[dict]:
    """Runs of a grid still in progress that have no folder yet: they read as queued."""
    rows = []
    for record in grid_records(store):
        if not record.get("alive"):
            continue
        for run_id, config in (record.get("configs") or {}).items():
            if run_id not in present and isinstance(config, dict):
                present.add(run_id)
                rows.append({"run_id": run_id, **defaults, **config, "state": "queued", "damaged": [],
                             "progress": {}, "grid": record.get("name")})
    return rows


def _place_unfinished(df: pd.DataFrame) -> pd.DataFrame:
    """Runs without a corruption report (queued; older failed runs) are placed from their config and the model's
    layer count (known offline, or from finished runs of the same model)."""
    for col in ("side", "n_layers", "level", "num_layers"):
        if col not in df:
            df[col] = np.nan
    # a store whose runs are all queued has no side yet: an all-NaN column is float, and cannot take "bottom"
    df["side"] = df["side"].astype(object)
    known = df.dropna(subset=["num_layers"]).groupby("model")["num_layers"].first().to_dict()
    for i in df.index[df["side"].isna()]:
        model = df.at[i, "model"]
        L = known.get(model)
        if L is None:
            try:
                from .models import num_layers

                L = known[model] = num_layers(str(model))
            except (HealcoreError, OSError):
                continue
        try:
            layers = [x + 1 for x in parse_layers(str(df.at[i, "corrupt"])).resolve(int(L))]
        except HealcoreError:
            continue
        df.at[i, "num_layers"] = L
        df.at[i, "side"], n = side_of(layers, int(L))
        df.at[i, "n_layers"], df.at[i, "level"] = n, n / int(L)
    return df


def dataset_labels(datasets: pd.Series) -> dict[str, str]:
    """Short, unique labels: registry names as they are, folders by their name (parent/name when two share it)."""
    values = sorted(set(map(str, datasets)))
    labels = {}
    for value in values:
        path = Path(value.rstrip("/"))
        labels[value] = path.name if ("/" in value or value.startswith((".", "~"))) and path.name else value
    taken: dict[str, list[str]] = {}
    for value, label in labels.items():
        taken.setdefault(label, []).append(value)
    for label, owners in taken.items():
        if len(owners) > 1:
            for value in owners:
                parts = Path(value.rstrip("/")).parts
                labels[value] = "/".join(parts[-2:]) if len(parts) >= 2 else value
    return labels


def load_epochs(root: str | Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run and finished epoch: train loss, validation and test metrics, times."""
    store = RunStore(root)
    rows = []
    for run_id in run_ids if run_ids is not None else store.run_ids():
        if not store.has_run(run_id):
            continue
        for e in store.epochs(run_id):
            row = {"run_id": run_id, "epoch": e["epoch"], "train_loss": e.get("train_loss"),
                   "train_s": e.get("train_s"), "eval_s": e.get("eval_s"), "lr": e.get("lr")}
            for split in ("validation", "test"):
                for k in ("accuracy", "f1_weighted", "f1_macro"):
                    row[f"{split}_{k}"] = (e.get(split) or {}).get(k)
            rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "epoch", "train_loss", "train_s", "eval_s", "lr"] + SPLIT_METRICS)


# ------------------------------------------------------------------------------------------ cells
def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Grid cells: the best learning rate kept, mean ± std over seeds; healing, recovery; per cell the count and
    reasons of its runs' convergence failures (any lr or seed), its runs in flight, and its surprises."""
    placed = runs[runs["side"].notna()] if len(runs) and "side" in runs else runs.iloc[0:0]
    if placed.empty:
        return pd.DataFrame(columns=CELL_KEYS + ["lr", "n_seeds", "f1", "f1_std", "n_failures", "surprises",
                                                 "run_ids", "all_run_ids", "n_running", "n_queued"])
    keys = [k for k in CELL_KEYS if k in placed.columns]
    placed = placed.assign(**{k: placed[k].astype(object).where(placed[k].notna(), "-") for k in keys})
    placed = placed.assign(select_score=_selection_scores(placed))
    out = [_cell(dict(zip(keys, key)), group) for key, group in placed.groupby(keys, dropna=False, sort=True)]
    table = pd.DataFrame(out)
    table["reference_failed"] = _reference_failed(table)
    table["recovery"] = _recovery(table)
    table["surprises"] = flags.cell_surprises(table, line_keys(table))
    return table


def _selection_scores(runs: pd.DataFrame) -> list[float]:
    scores = []
    for r in runs.to_dict("records"):
        val = r.get(f"validation_{r['metric']}")
        scores.append(val if r["select_on"] == "validation" and flags._num(val) else r.get(f"test_{r['metric']}"))
    return scores


def _cell(rec: dict, group: pd.DataFrame) -> dict:
    done = group[(group["state"] == "completed") & group["select_score"].notna()]
    by_lr = done.groupby("lr")["select_score"].mean()
    best_lr = by_lr.idxmax() if len(by_lr) else (group["lr"].iloc[0] if len(group) else np.nan)
    g = done[done["lr"] == best_lr]
    failing = group[group["failed"]]
    shown_failing = g[g["failed"]]  # runs whose numbers make up the value the cell shows
    in_flight = group[group["state"] == "running"]
    progress = [(p or {}).get("epoch", 0) / max(1, (p or {}).get("epochs") or e)
                for p, e in zip(in_flight["progress"], in_flight["epochs"])]
    rec.update(
        lr=best_lr, lrs_tried=len(by_lr), n_seeds=len(g), seeds=sorted(g["seed"].tolist()),
        f1=g["test_f1_weighted"].mean() if len(g) else np.nan,
        f1_std=g["test_f1_weighted"].std(ddof=1) if len(g) > 1 else (0.0 if len(g) else np.nan),
        f1_macro=g["test_f1_macro"].mean() if len(g) else np.nan,
        accuracy=g["test_accuracy"].mean() if len(g) else np.nan,
        best_on_test=g["best_on_test"].mean() if len(g) else np.nan,
        probe_f1=g["probe_f1"].mean() if len(g) else np.nan,
        healing=g["healing"].mean() if len(g) else np.nan,
        majority_f1=g["majority_f1"].mean() if len(g) else np.nan,
        run_ids=g["run_id"].tolist(), all_run_ids=group["run_id"].tolist(),
        per_seed=dict(zip(g["seed"].tolist(), g["test_f1_weighted"].tolist())),
        n_runs=len(group), n_completed=int((group["state"] == "completed").sum()),
        n_failures=len(failing), failure_run_ids=failing["run_id"].tolist(),
        failures=sorted({f for fl in failing["failures"] for f in fl}),
        value_failed=bool(len(shown_failing)), value_failures=sorted({f for fl in shown_failing["failures"] for f in fl}),
        n_running=len(in_flight), n_queued=int((group["state"] == "queued").sum()),
        progress=float(np.mean(progress)) if progress else np.nan)
    return rec


def line_keys(table: pd.DataFrame) -> list[str]:
    """What a degradation line shares: everything in a cell's key but the corruption setting itself."""
    return [k for k in CELL_KEYS if k not in CORRUPTION_KEYS and k in table.columns]


def line_names(table: pd.DataFrame) -> pd.Series:
    """Per cell, its model's name plus, in brackets, what sets its line apart from the table's other lines of
    the same model and dataset: the non-corruption keys that take several values in the table (pooling and mode
    bare, others as "key value"). Just the model when nothing varies; tables and claims use it so that, say, a
    6-epoch and a 16-epoch clean cell are never compared as one line."""
    keys = [k for k in line_keys(table) if k not in ("model", "dataset")]
    varying = [k for k in keys if as_text(table[k]).nunique() > 1]
    labels = [", ".join(str(getattr(r, k)) if k in ("pooling", "mode") else f"{k} {getattr(r, k)}" for k in varying)
              for r in table.itertuples()]
    return pd.Series([f"{m} [{lab}]" if lab else m for m, lab in zip(table["model"], labels)], index=table.index,
                     dtype=object)


def _value_failed(table: pd.DataFrame) -> pd.Series:
    """Per cell, whether the value it shows is a convergence failure (a run at its kept learning rate failed)."""
    return table["value_failed"].astype(bool) if "value_failed" in table else pd.Series(False, index=table.index)


def _reference_failed(table: pd.DataFrame) -> pd.Series:
    """Per cell, the reason its line's clean cell cannot serve as a reference (its value is a convergence failure),
    else "": recovery ratios and the claims measured against such a clean cell would score noise."""
    out = pd.Series("", index=table.index, dtype=object)
    failed = _value_failed(table)
    for _, g in table.groupby(line_keys(table), dropna=False):
        clean = g[(g["side"] == "clean") & failed[g.index]]
        if len(clean):
            c = clean.iloc[0]
            reasons = "; ".join(c.get("value_failures") or []) or "convergence failure"
            out[g.index] = f"its clean cell (F1 {c['f1']:.2f}) is a convergence failure: {reasons}"
    return out


def _recovery(table: pd.DataFrame) -> pd.Series:
    """(F1 - F1_all) / (F1_clean - F1_all) per cell; undefined where either reference is a convergence failure."""
    rec = pd.Series(np.nan, index=table.index)
    failed = _value_failed(table)
    for _, g in table.groupby(line_keys(table), dropna=False):
        references = g[(g["side"] == "clean") | ((g["side"] == "all") & g["method"].isin(["reinit", "-"]))]
        if failed[references.index].any():
            continue
        clean = g[g["side"] == "clean"]["f1"].dropna()
        full = reinit_only(g[g["side"] == "all"])["f1"].dropna()
        if len(clean) and len(full) and clean.iloc[0] != full.iloc[0]:
            rec[g.index] = (g["f1"] - full.iloc[0]) / (clean.iloc[0] - full.iloc[0])
    return rec


def scored(table: pd.DataFrame) -> pd.DataFrame:
    """Cells with a score (at least one completed run at their learning rate)."""
    return table[table["f1"].notna()] if len(table) else table


# ------------------------------------------------------------------------------------------ plateau
PLATEAU_POINTS = 1.0  # a clean model whose last third of epochs still adds this much validation F1 was cut short


def scored_runs(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The runs the cells score: each cell's runs at its kept learning rate. Analyses read beside a cell's F1
    (layer similarity, weight movement, per-class F1) use these, not every learning rate tried."""
    kept = {i for ids in table["run_ids"] for i in ids}
    return runs[runs["run_id"].isin(kept)]


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


# ------------------------------------------------------------------------------------------ exports
def both_panels(side: str) -> list[str]:
    """The panels (bottom, top) a cell is drawn in: clean and all-layers cells are the references of both."""
    return ["bottom", "top"] if side in ("clean", "all") else [side] if side in ("bottom", "top") else []


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
                "failures": int(r.n_failures), "surprise": bool(r.surprises)}
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
    if cell.get("failures"):
        n = cell["failures"]
        text += {"markdown": f" †{n}", "latex": f"$^{{\\dagger {n}}}$", "csv": f" ({n} failed)"}[style]
    if cell.get("surprise"):
        text += {"markdown": " ‡", "latex": "$^\\ddagger$", "csv": " (surprise)"}[style]
    return text.strip()


TABLE1_NOTE = ("Bold: the higher of bottom/top at that level. †N: N runs of the cell (any learning rate or seed) "
               "had a convergence failure (failed, collapsed, flat loss, damaged or a seed far from its siblings). "
               "‡: a surprise, a finding rather than a failure (off its neighbours' trend, or above a cell with "
               "less corruption).")


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
