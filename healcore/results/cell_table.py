"""Grid cells from the runs table: each keeps its best learning rate and reports mean ± std over seeds; healing,
the recovery ratio, the plateau check, and the runs each cell scores. Torch-free.

- cell: every run sharing the experiment and its damage (config.CELL_FIELDS, the layers as side, level and which);
  its learning rate is the one with the best mean selection score over seeds (validation by default; a seed that
  crashed or diverged there counts as the majority-class score, so survivors alone never pick a rate), and the cell
  reports mean ± std over seeds of the best-epoch test score at that learning rate, flagged where seeds diverged at
  that rate, where it did not learn, or where a seed strays (`value_flags`; beside it `f1_without_stray`). A cell
  exists as soon as one of its runs does (queued, running or failed ones too), so nothing a grid does is a gap.
  `cell_id` hashes its key.
- line: every cell sharing the experiment (a degradation curve); its clean cell is the reference.
- healing: best test F1 minus the pre-fine-tuning probe F1 (logistic regression on frozen features).
- recovery ratio: (F1_cell - F1_all) / (F1_clean - F1_all), with "all" the 100%-corrupted cell; reported only where
  clean − all is well above its standard error, with a bootstrap interval and per-seed values, beside the
  probe-based ratio (F1 - probe) / (F1_clean - probe); undefined where a reference is no measurement.
- convergence failures and flags (per run) and surprises (per cell): flags.py.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from healcore.results import flags
from healcore.results.keys import CELL_KEYS, as_text, cell_id, describe, line_keys, text_of


def table1_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (runs or cells) of the paper's Table 1 variant: [CLS] pooling (a decoder's counterpart: its last real
    token, which a decoder-only model's classifier reads), full fine-tuning."""
    return frame[frame["pooling"].isin(("cls", "last")) & (frame["mode"] == "full")]


def reinit_only(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's corruption: whole layers re-initialised (every head), and the clean cells they are compared
    with."""
    whole = table["heads"].map(text_of).isin(["all", "-"]) if "heads" in table else True
    return table[table["method"].isin(["reinit", "-"]) & whole]


# ------------------------------------------------------------------------------------------ cells
def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Grid cells: the best learning rate kept, mean ± std over seeds; healing, recovery; per cell the count and
    reasons of its runs' convergence failures (any lr or seed), its runs in flight, and its surprises."""
    placed = runs[runs["side"].notna()] if len(runs) and "side" in runs else runs.iloc[0:0]
    if placed.empty:
        return pd.DataFrame(columns=CELL_KEYS + ["cell_id", "lr", "n_seeds", "f1", "f1_std", "n_failures", "surprises",
                                                 "run_ids", "all_run_ids", "n_running", "n_queued", "value_failed",
                                                 "reference_failed", "recovery"])
    keys = [k for k in CELL_KEYS if k in placed.columns]
    placed = placed.assign(**{k: placed[k].astype(object).where(placed[k].notna(), "-") for k in keys})
    placed = placed.assign(select_score=_selection_scores(placed))
    out = [_cell(dict(zip(keys, key)), group) for key, group in placed.groupby(keys, dropna=False, sort=True)]
    table = pd.DataFrame(out)
    table.insert(0, "cell_id", [cell_id(r) for r in table[keys].to_dict("records")])
    table["reference_failed"] = _reference_failed(table)
    for column, values in recovery_columns(table).items():
        table[column] = values
    table["surprises"] = flags.cell_surprises(table, line_keys(table))
    return table


def _selection_scores(runs: pd.DataFrame) -> list[float]:
    scores = []
    for r in runs.to_dict("records"):
        val = r.get(f"validation_{r['metric']}")
        scores.append(val if r["select_on"] == "validation" and flags._num(val) else r.get(f"test_{r['metric']}"))
    return scores


def _lr_scores(done: pd.DataFrame, failing: pd.DataFrame, penalty: float) -> pd.Series:
    """Each learning rate's selection score: the mean over every seed that ended there, a seed that crashed or
    diverged counting as `penalty` (the majority-class score: what a model that learned nothing gets), so a rate
    whose seeds diverge is not chosen on its survivors alone. Only rates with a completed run can be chosen."""
    scores = {}
    for lr, g in done.groupby("lr"):
        lost = failing[failing["lr"] == lr]
        scores[lr] = float(np.mean([*g["select_score"], *[penalty] * len(lost)]))
    return pd.Series(scores, dtype=float)


def _cell(rec: dict, group: pd.DataFrame) -> dict:
    done = group[(group["state"] == "completed") & group["select_score"].notna()]
    failing = group[group["failed"]]
    majority = done["majority_f1"].dropna()
    penalty = float(majority.mean()) if len(majority) else (float(done["select_score"].min()) if len(done) else 0.0)
    by_lr = _lr_scores(done, failing, penalty)
    best_lr = by_lr.idxmax() if len(by_lr) else (group["lr"].iloc[0] if len(group) else np.nan)
    g = done[done["lr"] == best_lr]
    lost = failing[failing["lr"] == best_lr]
    in_flight = group[group["state"] == "running"]
    progress = [(p or {}).get("epoch", 0) / max(1, (p or {}).get("epochs") or e)
                for p, e in zip(in_flight["progress"], in_flight["epochs"])]
    kept_flags = [[f for f in fl if not f.startswith(flags.DAMAGED)] for fl in g["flags"]] if len(g) else []
    did_not_learn = bool(len(g)) and all(any(f.startswith(flags.DID_NOT_LEARN) for f in fl) for fl in kept_flags)
    stray = g[[any(f.startswith(flags.STRAY) for f in fl) for fl in kept_flags]] if len(g) else g
    value_flags = sorted({f for fl in kept_flags for f in fl})
    if len(lost) and len(g):
        value_flags.insert(0, f"{len(lost)} of {len(lost) + len(g)} seeds diverged or crashed at this learning rate "
                              f"(counted against it when it was chosen; the value is the other seeds' mean)")
    rec.update(
        lr=best_lr, lrs_tried=int(group["lr"].nunique()), n_seeds=len(g), seeds=sorted(g["seed"].tolist()),
        f1=g["test_f1_weighted"].mean() if len(g) else np.nan,
        f1_std=g["test_f1_weighted"].std(ddof=1) if len(g) > 1 else (0.0 if len(g) else np.nan),
        f1_macro=g["test_f1_macro"].mean() if len(g) else np.nan,
        accuracy=g["test_accuracy"].mean() if len(g) else np.nan,
        best_on_test=g["best_on_test"].mean() if len(g) else np.nan,
        probe_f1=g["probe_f1"].mean() if len(g) else np.nan,
        angular_shift=pd.to_numeric(g["angular_shift"], errors="coerce").mean() if len(g) else np.nan,
        bi_shift=pd.to_numeric(g["bi_shift"], errors="coerce").mean() if len(g) else np.nan,
        healing=g["healing"].mean() if len(g) else np.nan,
        train_rows=pd.to_numeric(g["train_rows"], errors="coerce").mean() if len(g) else np.nan,
        majority_f1=g["majority_f1"].mean() if len(g) else np.nan,
        run_ids=g["run_id"].tolist(), all_run_ids=group["run_id"].tolist(),
        per_seed=dict(zip(g["seed"].tolist(), g["test_f1_weighted"].tolist())),
        n_runs=len(group), n_completed=int((group["state"] == "completed").sum()),
        n_failures=len(failing), failure_run_ids=failing["run_id"].tolist(),
        failures=sorted({f for fl in failing["failures"] for f in fl}),
        # the value is no measurement only where no run at any rate scored and runs failed
        value_failed=bool(len(failing)) and not len(g), value_failures=sorted({f for fl in failing["failures"]
                                                                               for f in fl}) if not len(g) else [],
        diverged_at_lr=len(lost), did_not_learn=did_not_learn, value_flags=value_flags,
        value_flagged=bool(value_flags),
        f1_without_stray=(g[~g["run_id"].isin(stray["run_id"])]["test_f1_weighted"].mean()
                          if len(stray) and len(stray) < len(g) else np.nan),
        n_running=len(in_flight), n_queued=int((group["state"] == "queued").sum()),
        progress=float(np.mean(progress)) if progress else np.nan)
    return rec


def line_names(table: pd.DataFrame) -> pd.Series:
    """Per cell, its model's name plus, in brackets, what sets its line apart from the other lines of the same model
    and dataset, in words (keys.describe: "mean pooling, 10 epochs"). Just the model when nothing varies; tables,
    claims and figures use it so that, say, a 6-epoch and a 16-epoch clean cell are never drawn or judged as one
    line."""
    keys = [k for k in line_keys(table) if k not in ("model", "dataset")]
    labels = pd.Series("", index=table.index, dtype=object)
    if len(table):
        for _, g in table.groupby([as_text(table["model"]), as_text(table["dataset"])], sort=False):
            labels[g.index] = describe(g, keys)
    return pd.Series([f"{m} [{lab}]" if lab else str(m) for m, lab in zip(table["model"], labels)],
                     index=table.index, dtype=object)


def _value_failed(table: pd.DataFrame) -> pd.Series:
    """Per cell, whether it has no measurement (every run at every learning rate crashed or diverged)."""
    return table["value_failed"].astype(bool) if "value_failed" in table else pd.Series(False, index=table.index)


def _unusable_reference(table: pd.DataFrame) -> pd.Series:
    """Per cell, whether it cannot serve as its line's clean reference: no measurement, or a clean model that did not
    learn (a clean model can: its collapse is a failed fine-tuning, not a finding)."""
    did_not_learn = table["did_not_learn"].astype(bool) if "did_not_learn" in table else \
        pd.Series(False, index=table.index)
    return _value_failed(table) | did_not_learn


def _reference_failed(table: pd.DataFrame) -> pd.Series:
    """Per cell, the reason its line's clean cell cannot serve as a reference (no measurement, or it did not learn),
    else "": recovery ratios and the claims measured against such a clean cell would score noise."""
    out = pd.Series("", index=table.index, dtype=object)
    unusable = _unusable_reference(table)
    for _, g in table.groupby(line_keys(table), dropna=False):
        clean = g[(g["side"] == "clean") & unusable[g.index]]
        if len(clean):
            c = clean.iloc[0]
            reasons = "; ".join((c.get("value_failures") or []) + [f for f in (c.get("value_flags") or [])
                                                                   if f.startswith(flags.DID_NOT_LEARN)])
            value = f"F1 {c['f1']:.2f}" if np.isfinite(c["f1"]) else "no score"
            out[g.index] = f"its clean cell ({value}) is no reference: {reasons or 'convergence failure'}"
    return out


# ------------------------------------------------------------------------------------------ recovery ratio
RECOVERY_SE = 3.0  # a ratio is reported only where clean − all exceeds this many standard errors of that gap...
RECOVERY_MIN_GAP = 5.0  # ...and, where a reference has one seed (no standard error), this many F1 points
BOOTSTRAP = 1000  # resamples of each cell's seeds for a ratio's 95% interval (fixed seed: the same every time)


def _recovery(table: pd.DataFrame) -> pd.Series:
    """(F1 - F1_all) / (F1_clean - F1_all) per cell, where the gap clean − all is well above its noise (recovery_gap);
    undefined where a reference is no measurement or did not learn, or where the gap is within noise."""
    return recovery_columns(table)["recovery"]


def recovery_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell: `recovery` (guarded as above), its bootstrap 95% interval (`recovery_lo`, `recovery_hi`, where every
    reference and the cell have 2+ seeds), `recovery_per_seed` (seed -> the ratio of that seed's F1 against the
    references' means, what a comparison tests), `recovery_probe` ((F1 − probe) / (clean − probe): against the damaged
    model's own probe instead of the all-layers cell), and `recovery_note` (why a ratio is missing)."""
    out = pd.DataFrame({"recovery": np.nan, "recovery_lo": np.nan, "recovery_hi": np.nan, "recovery_probe": np.nan,
                        "recovery_note": ""}, index=table.index)
    out["recovery_per_seed"] = [{} for _ in range(len(table))]
    if table.empty:
        return out
    unusable = _unusable_reference(table)
    rng = np.random.default_rng(0)
    for _, g in table.groupby(line_keys(table), dropna=False):
        clean = g[g["side"] == "clean"]
        c = clean.iloc[0] if len(clean) else None
        if c is not None and np.isfinite(c["f1"]) and not unusable[clean.index[0]]:
            probe_gap = c["f1"] - g["probe_f1"]
            out.loc[g.index, "recovery_probe"] = ((g["f1"] - g["probe_f1"]) / probe_gap).where(probe_gap > 0)
        full = reinit_only(g[g["side"] == "all"])
        if c is None or full.empty or unusable[clean.index[0]] or unusable[full.index[0]]:
            out.loc[g.index, "recovery_note"] = "no usable clean and all-layers cells"
            continue
        a = full.iloc[0]
        gap, note = recovery_gap(c, a)
        if note:
            out.loc[g.index, "recovery_note"] = note
            continue
        out.loc[g.index, "recovery"] = (g["f1"] - a["f1"]) / gap
        for i, r in zip(g.index, g.to_dict("records")):
            out.at[i, "recovery_per_seed"] = {s: (v - a["f1"]) / gap for s, v in (r.get("per_seed") or {}).items()}
            lo_hi = _bootstrap(r, c, a, rng)
            if lo_hi:
                out.loc[i, ["recovery_lo", "recovery_hi"]] = lo_hi
    return out


def recovery_gap(clean, full) -> tuple[float, str]:
    """(clean − all, "") where that gap is well above its standard error, else (nan, why not)."""
    gap = float(clean["f1"] - full["f1"])
    n_c, n_a = int(clean["n_seeds"] or 0), int(full["n_seeds"] or 0)
    if min(n_c, n_a) >= 2:
        se = math.sqrt(float(clean["f1_std"]) ** 2 / n_c + float(full["f1_std"]) ** 2 / n_a)
        if gap <= RECOVERY_SE * se or gap <= 0:
            return np.nan, (f"clean − all = {gap:.2f} is within {RECOVERY_SE:g} standard errors ({se:.2f}): "
                            f"no ratio")
        return gap, ""
    if gap < RECOVERY_MIN_GAP:
        return np.nan, (f"clean − all = {gap:.2f} < {RECOVERY_MIN_GAP:g} points with one seed (no standard error): "
                        f"no ratio")
    return gap, ""


def _bootstrap(cell: dict, clean, full, rng: np.random.Generator) -> tuple[float, float] | None:
    """A 95% percentile interval of the ratio, resampling each of the three cells' seeds."""
    values = [np.array(list((x.get("per_seed") if isinstance(x, dict) else x["per_seed"]).values()), dtype=float)
              for x in (cell, clean, full)]
    if any(len(v) < 2 for v in values):
        return None
    draws = [v[rng.integers(0, len(v), size=(BOOTSTRAP, len(v)))].mean(axis=1) for v in values]
    gap = draws[1] - draws[2]
    ratios = np.where(gap > 0, (draws[0] - draws[2]) / np.where(gap > 0, gap, 1), np.nan)
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios) < BOOTSTRAP // 2:
        return None
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


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


# ------------------------------------------------------------------------------------------ healing speed
SPEED_SHARE = 0.95  # a run has healed once its test F1 reaches this share of its line's clean cell's best


def healing_speed(table: pd.DataFrame, epochs: pd.DataFrame, share: float = SPEED_SHARE) \
        -> tuple[pd.Series, dict[str, float]]:
    """How fast each cell heals: per run at the cell's kept learning rate, the first epoch whose test weighted F1
    reaches `share` of its line's clean cell's F1 (inf: not reached in its epochs); per cell, the median over its
    seeds (inf when most never reached it). From the per-epoch metrics already stored: no extra training. Missing
    where the line has no clean score or its clean cell is a convergence failure. Returns (per cell, per run)."""
    per_run: dict[str, float] = {}
    per_cell = pd.Series(np.nan, index=table.index, dtype=float)
    curves = {run_id: g.sort_values("epoch") for run_id, g in epochs.groupby("run_id")} if len(epochs) else {}
    reference = _clean_reference(table)
    for i, r in zip(table.index, table.to_dict("records")):
        ref = reference[i]
        if not np.isfinite(ref):
            continue
        speeds = []
        for run_id in r.get("run_ids") or []:
            curve = curves.get(run_id)
            if curve is None or curve.empty:
                continue
            hit = curve[curve["test_f1_weighted"] >= share * ref]
            per_run[run_id] = float(hit["epoch"].iloc[0]) if len(hit) else float("inf")
            speeds.append(per_run[run_id])
        if speeds:
            per_cell[i] = float(np.median(speeds))
    return per_cell, per_run


def _clean_reference(table: pd.DataFrame) -> pd.Series:
    """Each cell's line's clean F1 (NaN where the line has none, or its clean cell is no reference)."""
    out = pd.Series(np.nan, index=table.index, dtype=float)
    failed = _unusable_reference(table)
    for _, g in table.groupby(line_keys(table), dropna=False):
        clean = g[(g["side"] == "clean") & ~failed[g.index]]["f1"].dropna()
        if len(clean):
            out[g.index] = float(clean.iloc[0])
    return out


def both_panels(side: str) -> list[str]:
    """The panels (bottom, top) a cell is drawn in: clean and all-layers cells are the references of both."""
    return ["bottom", "top"] if side in ("clean", "all") else [side] if side in ("bottom", "top") else []
