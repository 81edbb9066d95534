"""Two conditions of a grid compared cell by cell: A, B and A − B, with a significance test per cell.

A side is a set of cells: those of one value of a configuration key (pooling = cls), a whole run store (two
machines, two versions of a model), or the paper's published numbers (paper.py). Cells are aligned on everything
but the compared key: dataset, side and level (a percentage of the layers, so a 6-layer and a 12-layer model line
up), the model unless the model is compared, and every other key of a cell's experiment. Each side keeps its own
best learning rate per cell, as Table 1 does.

Honest cells (`status`): a cell on one side only is "only in A" or "only in B", never 0 or a gap; a cell whose
value on either side is a convergence failure is "failure in A/B/both" and its difference is no measurement
(`delta` is missing). Failures at another learning rate or seed than the one shown are counted beside it
(`a_other_failures`), not confused with a failed value.

Significance: where both sides have at least two seeds, a paired t-test over the seeds they share (same seed, same
data order and head), or Welch's t-test where fewer than two pair; with one seed on a side, "n = 1, no test". The
p-values of a comparison are corrected together (Holm, or Benjamini-Hochberg) and a cell is marked significant
when its corrected p is below ALPHA. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from healcore.core.config import CORRUPTION_FIELDS, RunConfig
from healcore.core.errors import ConfigError
from healcore.results.keys import (CELL_KEYS, MODEL_PLACEMENT, NOT_COMPARED, PLACEMENT_KEYS, align_keys, as_text,
                                   describe, key_id, row_keys, side_rank, text_of, varying)

ALPHA = 0.05
CORRECTIONS = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
METRICS = {"f1": "weighted F1", "f1_macro": "macro F1", "accuracy": "accuracy",
           "healing": "healing (F1 after − probe)", "recovery": "recovery ratio",
           "healing_speed": "healing speed (epochs)"}
# the per-run column behind a cell's metric (a test needs each seed's value)
RUN_VALUE = {"f1": "test_f1_weighted", "f1_macro": "test_f1_macro", "accuracy": "test_accuracy",
             "healing": "healing", "healing_speed": "healing_speed"}
STORE_KEY = "store"  # "compare by another run store"
PAPER_KEY = "paper"  # "compare with the paper"
PLACING = ("corrupt", *PLACEMENT_KEYS)  # settings that place a cell on its line: a comparison's columns


@dataclass
class Side:
    """One side of a comparison: its cells, the runs behind them (None for the paper), and its name."""

    name: str
    cells: pd.DataFrame
    runs: pd.DataFrame | None = None
    root: str | None = None  # the store it reads (None for the paper)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ what compares
def candidate_keys(table: pd.DataFrame) -> list[str]:
    """The settings a comparison could set side by side, in the order of a cell's key (model first)."""
    return ["model"] + [k for k in CELL_KEYS if k not in NOT_COMPARED and k != "model" and k in table]


def pairings(table: pd.DataFrame, key: str) -> dict[str, set[str]]:
    """value of `key` -> the other values it shares an aligned cell with (a cell of the same experiment and damage
    in every other setting): the pairs a comparison by `key` can measure."""
    if key not in table or table.empty:
        return {}
    keys = align_keys(table.columns, key)
    spot = pd.Series([key_id(r, keys) for r in table[keys].to_dict("records")], index=table.index)
    out: dict[str, set[str]] = {}
    for values in as_text(table[key]).groupby(spot).agg(lambda v: set(v)):
        for v in values if len(values) > 1 else ():
            out.setdefault(v, set()).update(values - {v})
    return out


def comparable_keys(table: pd.DataFrame) -> list[str]:
    """The settings with at least one cell measured under two of their values, everything else equal: what
    "Compare by" and `healcore compare --by` offer (a setting that varies only together with another is not)."""
    return [k for k in candidate_keys(table) if pairings(table, k)]


def values_of(table: pd.DataFrame, key: str) -> list[str]:
    """The values of `key` that pair with another (all of them where none pairs), in natural order."""
    paired = pairings(table, key)
    values = paired if paired else set(as_text(table[key]).unique()) if key in table else set()
    default = text_of(getattr(RunConfig(), key, None))  # the usual value first: it is the A a reader compares with
    return sorted(values, key=lambda v: (v != default, _natural(v)))


def partners_of(table: pd.DataFrame, key: str, a: str) -> list[str]:
    """What B may be once A is `a`: the values `a` pairs with, in natural order (every other value where it pairs
    with none: split then says why they do not compare). The CLI and the pages offer B from here."""
    partners = sorted(pairings(table, key).get(str(a), ()), key=_natural)
    return partners or [v for v in values_of(table, key) if v != str(a)]



def why_not_comparable(table: pd.DataFrame, key: str) -> str:
    """One line: why `key` cannot be compared in this table, and what can."""
    can = ", ".join(comparable_keys(table)) or "none (compare with another store or the paper)"
    if key in PLACING:
        return (f"{key} places a cell on its line: its settings (clean, bottom and top levels, all) are the columns of "
                f"every comparison, and bottom against top is tested by healcore report's claims; compare by a "
                f"setting of the recipe instead: {can}")
    if key not in candidate_keys(table):
        return f"{key!r} is not a setting a cell is compared by; use one of: {can}"
    if as_text(table[key]).nunique() <= 1:
        return f"{key!r} has a single value in this selection, so there is nothing to compare; keys that compare: {can}"
    together = [k for k in varying(table, ["dataset", *candidate_keys(table)]) if k != key
                and _confounded(table, key, k)]
    if together:
        instead = [k for k in together if k in comparable_keys(table)]
        return (f"{key!r} varies only together with {' and '.join(together)}: no cell was measured under two values "
                f"of {key} with everything else equal; "
                + (f"compare by {instead[0]}, or " if instead else "") + f"run the missing cells; keys that compare: "
                f"{can}")
    return (f"{key!r} varies, but no two of its values share an experiment (other settings differ with it); keys that "
            f"compare: {can}")


def _confounded(table: pd.DataFrame, key: str, other: str) -> bool:
    """Whether each value of `other` occurs with one value of `key` only (the two vary together)."""
    pairs = pd.DataFrame({"k": as_text(table[key]), "o": as_text(table[other])}).drop_duplicates()
    return bool(pairs.groupby("o")["k"].nunique().max() == 1 and pairs["o"].nunique() > 1)


def _natural(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def split(table: pd.DataFrame, runs: pd.DataFrame, key: str, a: str, b: str, root: str | None = None) \
        -> tuple[Side, Side]:
    """The two sides of "compare by `key`": the cells whose key reads `a`, and those reading `b`. One-line errors
    for a key that does not compare (saying why, and naming those that do), A equal to B, and two values that never
    share an experiment."""
    if key not in comparable_keys(table):
        raise ConfigError(why_not_comparable(table, key))
    if str(a) == str(b):
        raise ConfigError(f"A and B are both {key} = {a}; choose two different values")
    values = sorted(as_text(table[key]).unique(), key=_natural)
    for v in (a, b):
        if str(v) not in values:
            raise ConfigError(f"{key} = {v} is not in this selection; its values: {', '.join(values)}")
    if str(b) not in pairings(table, key).get(str(a), set()):
        pairs = sorted(pairings(table, key).get(str(a), ()), key=_natural)
        raise ConfigError(f"{key} = {a} and {key} = {b} share no experiment (no cell measured under both with "
                          f"everything else equal); " + (f"{key} = {a} pairs with {', '.join(pairs)}" if pairs
                                                         else f"{key} = {a} pairs with no other value"))
    text = as_text(table[key])
    return (Side(f"{key} = {a}", table[text == str(a)], runs, root),
            Side(f"{key} = {b}", table[text == str(b)], runs, root))


# ------------------------------------------------------------------------------------------ the comparison
ROW_SPLIT = ("side", "level")  # an aligned cell's place in its row


def compare(a: Side, b: Side, key: str | None, metric: str = "f1", correction: str = "holm",
            relative: bool = False) -> pd.DataFrame:
    """One row per aligned cell: each side's value, spread, seeds, learning rate and runs; A − B; the test, its p
    and corrected p, whether it stays significant; and a status that says when a row is no measurement.
    Every aligned cell belongs to one experiment of each side (`row`: its id; `experiment`: the settings that set its
    row apart, in words). A side with settings the other lacks (the paper has no schedule or epochs) sets each of
    its experiments against the other side's one cell there.
    `relative` puts each value as a share (%) of its own line's clean cell (two models, or a store and the paper
    on another model)."""
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction {correction!r} is not one of {', '.join(CORRECTIONS)}")
    shared = [k for k in a.cells.columns if k in set(b.cells.columns)]
    keys = align_keys(shared, key)
    own = {s: [k for k in row_keys(side.cells.columns, key) if k not in keys and k not in ("model",)]
           for s, side in (("a", a), ("b", b))}
    left = _prepared(a, keys, own["a"], metric, relative)
    right = _prepared(b, keys, own["b"], metric, relative)
    if left["align"].duplicated().any() and right["align"].duplicated().any():
        raise ConfigError(f"{a.name} and {b.name} each hold several experiments the other cannot tell apart "
                          f"({', '.join(own['a'] + own['b'])}); keep one value of them (--where KEY=VALUE)")
    merged = left.merge(right, on=["align"], how="outer", suffixes=("_a", "_b"), indicator=True)
    rows = [_row(r, keys, own["a"] + own["b"], a, b, metric) for r in merged.to_dict("records")]
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    tested = out["p"].notna()
    out["p_adj"] = np.nan
    out.loc[tested, "p_adj"] = adjust(out.loc[tested, "p"].to_numpy(), correction)
    out["significant"] = out["p_adj"] < ALPHA
    row_settings = [k for k in keys if k not in ROW_SPLIT and k not in ("model", "dataset")] + own["a"] + own["b"]
    out["experiment"] = describe(out, row_settings)
    out.attrs.update(correction=CORRECTIONS[correction], metric=metric, a=a.name, b=b.name, key=key,
                     relative=relative, align=keys, row_settings=row_settings, notes=a.notes + b.notes)
    model = out["model"] if "model" in out else out["model_a"].astype(str) + " vs " + out["model_b"].astype(str)
    order = out.assign(_side=out["side"].map(side_rank), _model=as_text(model), _exp=out["experiment"])
    return out.loc[order.sort_values(["_model", "dataset", "_exp", "level", "_side"], kind="stable").index] \
        .reset_index(drop=True)


def _prepared(side: Side, keys: list[str], own: list[str], metric: str, relative: bool) -> pd.DataFrame:
    """A side's cells keyed by their alignment (`align`, on the keys both sides have) and their own experiment
    (`cell_row`, with the settings only this side has), with the value compared and each seed's."""
    cells = side.cells
    if cells.empty:
        return pd.DataFrame(columns=["align", "cell_row", *keys, "value"])
    value = cells[metric] if metric in cells else pd.Series(np.nan, index=cells.index)
    out = cells.assign(value=value.astype(float))
    by_run = _run_values(side, metric)
    out["per_seed_value"] = [{by_run[i][0]: by_run[i][1] for i in (ids or []) if i in by_run}
                             for ids in out["run_ids"]]
    if metric == "recovery" and "recovery_per_seed" in out:  # each seed's ratio against its line's references
        out["per_seed_value"] = [dict(d) if isinstance(d, dict) else {} for d in out["recovery_per_seed"]]
    if relative:
        clean = _clean_of(out, keys + own)
        out["value"] = 100 * out["value"] / clean
        out["per_seed_value"] = [{s: 100 * v / c for s, v in d.items()} if np.isfinite(c) else {}
                                 for d, c in zip(out["per_seed_value"], clean)]
    records = out.to_dict("records")
    out["align"] = [key_id(r, keys) for r in records]
    out["cell_row"] = [key_id(r, keys + own) for r in records]
    twins = out[out["cell_row"].duplicated(keep=False)]
    if len(twins):  # two cells of one side on one spot: a key that varies there must be chosen first
        differ = [k for k in CELL_KEYS if k in twins and k not in keys + own and k not in MODEL_PLACEMENT
                  and as_text(twins[k]).nunique() > 1]
        raise ConfigError(f"{side.name}: several cells fall on one spot (they differ in {', '.join(differ) or 'a key'}"
                          f"); keep one value of {differ[0] if differ else 'it'} (--where "
                          f"{differ[0] if differ else 'KEY'}=VALUE) before comparing")
    return out


def _clean_of(cells: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Each cell's line's clean value (its reference for a relative comparison)."""
    line = [k for k in keys if k not in ("side", "level", *CORRUPTION_FIELDS)]
    clean = cells[cells["side"] == "clean"]
    lookup = {tuple(text_of(r[k]) for k in line): r["value"] for r in clean.to_dict("records")}
    return pd.Series([lookup.get(tuple(text_of(r[k]) for k in line), np.nan) for r in cells.to_dict("records")],
                     index=cells.index, dtype=float)


def _run_values(side: Side, metric: str) -> dict[str, tuple[int, float]]:
    """run id -> (seed, the run's value of the metric): each cell's per-seed values (what a test compares) are its
    kept runs'. A value of inf is kept: healing not reached."""
    if side.runs is None or metric not in RUN_VALUE or RUN_VALUE[metric] not in side.runs:
        return {}
    runs = side.runs
    return {i: (int(s), float(v)) for i, s, v in zip(runs["run_id"], runs["seed"], runs[RUN_VALUE[metric]])
            if _finite(v) or (isinstance(v, float) and math.isinf(v))}


def _row(r: dict, keys: list[str], own: list[str], a: Side, b: Side, metric: str) -> dict:
    present = r["_merge"]
    out = {k: _either(r, k) for k in keys + own}
    # an aligned cell's id: its alignment and, where one side has settings the other lacks, its own experiment
    row_id = r.get("cell_row_a") if present != "right_only" else r.get("cell_row_b")
    out.update(align=row_id if own else r["align"], model_a=r.get("model_a", r.get("model")),
               model_b=r.get("model_b", r.get("model")))
    if isinstance(r.get("paper_model"), str):  # the paper's cells stand beside the store's model: name the paper's
        out["model_b"] = r["paper_model"]
    for s in ("a", "b"):
        here = present in ("both", "left_only" if s == "a" else "right_only")
        value = r.get(f"value_{s}")
        out[s] = float(value) if here and value is not None and not pd.isna(value) else np.nan
        out[f"{s}_std"] = r.get(f"f1_std_{s}") if here else np.nan
        out[f"{s}_n"] = int(r.get(f"n_seeds_{s}") or 0) if here else 0
        out[f"{s}_lr"] = r.get(f"lr_{s}") if here else np.nan
        out[f"{s}_cell_id"] = r.get(f"cell_id_{s}") if here else None
        out[f"{s}_run_ids"] = list(r.get(f"all_run_ids_{s}") or []) if here else []
        out[f"{s}_value_failed"] = bool(r.get(f"value_failed_{s}")) if here else False
        out[f"{s}_why_failed"] = "; ".join(r.get(f"value_failures_{s}") or []) if here else ""
        # runs that crashed or diverged beside a value that stands (all of them where none stands: value_failed)
        out[f"{s}_other_failures"] = int(r.get(f"n_failures_{s}") or 0) if here and not out[f"{s}_value_failed"] \
            else 0
        out[f"{s}_per_seed"] = r.get(f"per_seed_value_{s}") or {} if here else {}
        out[f"{s}_flags"] = list(r.get(f"value_flags_{s}") or []) if here else []  # kept, but to be known
        out[f"{s}_in_flight"] = int(r.get(f"n_running_{s}") or 0) + int(r.get(f"n_queued_{s}") or 0) if here else 0
    out["status"] = _status(present, out)
    measured = out["status"] == ""
    out["delta"] = out["a"] - out["b"] if measured else np.nan
    out["test"], out["p"] = _test(out) if measured else (out["status"], np.nan)
    out["seeds_needed"] = None
    if measured and out["test"].startswith("paired"):
        common = sorted(set(out["a_per_seed"]) & set(out["b_per_seed"]))
        diffs = [out["a_per_seed"][k] - out["b_per_seed"][k] for k in common]
        if len(common) < max(len(out["a_per_seed"]), len(out["b_per_seed"])):
            # the difference shown is the one tested: over the paired seeds only
            out["delta"] = float(np.mean(diffs))
            out["test"] += f" (A − B over those {len(common)} paired seeds)"
        out["seeds_needed"] = seeds_needed(float(np.mean(diffs)), float(np.std(diffs, ddof=1)))
    elif measured and out["test"].startswith("Welch"):
        sa, sb = list(out["a_per_seed"].values()), list(out["b_per_seed"].values())
        sd = math.sqrt((np.var(sa, ddof=1) + np.var(sb, ddof=1)))  # the sd of one seed's A − B, unpaired
        out["seeds_needed"] = seeds_needed(out["delta"], sd)
    return out


def _either(r: dict, k: str):
    for name in (k, f"{k}_a", f"{k}_b"):
        if name in r and not (isinstance(r[name], float) and math.isnan(r[name])):
            return r[name]
    return None


def _status(present: str, row: dict) -> str:
    """Why a row is no measurement ("" when it is one)."""
    if present == "left_only":
        return "only in A"
    if present == "right_only":
        return "only in B"
    failed = [s.upper() for s in ("a", "b") if row[f"{s}_value_failed"]]
    if failed:
        return "failure in both" if len(failed) == 2 else f"failure in {failed[0]}"
    unreached = [s.upper() for s in ("a", "b") if isinstance(row[s], float) and math.isinf(row[s])]
    if unreached:
        return f"not reached in {' and '.join(unreached)}"
    missing = [s.upper() for s in ("a", "b") if not _finite(row[s])]
    if missing:
        what = "running or queued" if any(row[f"{s.lower()}_in_flight"] for s in missing) else "no score"
        return f"{what} in {' and '.join(missing)}"
    return ""


def _test(row: dict) -> tuple[str, float]:
    """(the test, its p-value) for a measured row; no test where a side has one seed."""
    sa, sb = row["a_per_seed"], row["b_per_seed"]
    na, nb = row["a_n"], row["b_n"]
    if min(na, nb) < 2 or min(len(sa), len(sb)) < 2:
        n = min(na, nb)
        return (f"n = {n}, no test" if n <= 1 else "no per-seed values, no test"), np.nan
    if not all(map(np.isfinite, [*sa.values(), *sb.values()])):
        return "some seeds never reached it, no test", np.nan
    return seed_test(sa, sb)


def seed_test(sa: dict, sb: dict, alternative: str = "two-sided") -> tuple[str, float]:
    """(the test's name, its p) of A against B over their seeds (seed -> value): a paired t-test over the seeds both
    have where 2 or more pair (same seed, same data order and head), else Welch's t-test; `alternative` "less" tests
    A < B. No spread (every difference equal, or every value) is no test: (name, nan), with no warning printed."""
    import warnings

    from scipy import stats

    common = sorted(set(sa) & set(sb))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss warning on near-equal seeds
        if len(common) >= 2:
            a, b = [sa[s] for s in common], [sb[s] for s in common]
            diffs = np.subtract(a, b)
            res = stats.ttest_rel(a, b, alternative=alternative) if np.ptp(diffs) > 1e-12 * max(1, abs(diffs).max()) \
                else None
            name = f"paired t-test over {len(common)} seeds"
        else:
            a, b = list(sa.values()), list(sb.values())
            spread = np.ptp(a) + np.ptp(b) if len(a) > 1 and len(b) > 1 else 0.0
            res = stats.ttest_ind(a, b, equal_var=False, alternative=alternative) if spread > 0 else None
            name = f"Welch's t-test ({len(sa)} vs {len(sb)} seeds)"
    p = float(res.pvalue) if res is not None else np.nan
    return (name, p) if np.isfinite(p) else (f"{name}: no spread, no test", np.nan)


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, power: float = 0.8, tests: int = 1) -> int | None:
    """How many paired seeds a paired t-test needs to find a difference `delta` with power `power` at `alpha`
    (Bonferroni over `tests` cells, a close bound on Holm's first step), given the differences' sd; None without
    a difference or a spread. The t quantiles are iterated: at small n they are far above the normal's."""
    from scipy import stats

    if not (np.isfinite(delta) and np.isfinite(sd)) or delta == 0 or sd <= 0:
        return None
    level = alpha / max(1, tests)
    for n in range(2, 10_000):
        df = n - 1
        t_crit = stats.t.ppf(1 - level / 2, df)
        noncentral = abs(delta) / sd * math.sqrt(n)
        if stats.nct.sf(t_crit, df, noncentral) >= power:
            return n
    return None


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """p-values corrected for the cells tested together: Holm's step-down, or Benjamini-Hochberg's."""
    from scipy import stats

    p = np.asarray(p, dtype=float)
    if not len(p):
        return p
    if correction == "bh":
        return stats.false_discovery_control(p, method="bh")
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(float(x))


# ------------------------------------------------------------------------------------------ sides from elsewhere
def store_sides(root: str, runs: pd.DataFrame, table: pd.DataFrame, root2: str, runs2: pd.DataFrame,
                table2: pd.DataFrame) -> tuple[Side, Side]:
    """This store against a second one, matched on their experiments (the cells' keys), never on folder names. A
    second store that shares no experiment is a one-line error."""
    if table2.empty:
        raise ConfigError(f"the second store {root2} holds no runs; choose a run store (a folder of run folders)")
    keys = align_keys([k for k in table.columns if k in set(table2.columns)], None)
    shared = {key_id(r, keys) for r in table.to_dict("records")} & \
        {key_id(r, keys) for r in table2.to_dict("records")}
    if not shared:
        raise ConfigError(f"no run of {root2} matches an experiment of {root} (model, data, recipe, damage); "
                          f"compare stores that ran the same grid, or a subset of it")
    return Side(f"store {root}", table, runs, root), Side(f"store {root2}", table2, runs2, root2)


def paper_side(table: pd.DataFrame, paper_model: str | None = None) -> tuple[Side, bool]:
    """The paper's cells as side B, for the pooling and mode this store ran (Table 1, 3 or 4), and whether the
    comparison is relative: the store's model is not one the paper ran, so each side is a share of its own clean
    score (levels are percentages of the layers, so the shapes compare)."""
    from healcore.results.paper import MODELS, NAME, matching_model, paper_cells

    paper = paper_cells()
    models = list(dict.fromkeys(table["model"])) if len(table) else []
    chosen = paper_model or matching_model(models)
    if chosen not in MODELS:
        raise ConfigError(f"the paper ran {', '.join(MODELS)}, not {chosen}")
    same_model = chosen in models
    cells = paper[paper["model"] == chosen].assign(paper_model=chosen)
    if not same_model:  # set beside each of the store's models: two models, their shapes compared
        cells = pd.concat([cells.assign(model=m) for m in models]) if models else cells
    if len(table):  # the paper's cells of this store's tasks and variants only
        cells = cells[cells["pooling"].isin(set(table["pooling"])) & cells["mode"].isin(set(table["mode"]))
                      & cells["dataset"].isin(set(table["dataset"]))]
    return Side(f"{NAME} ({chosen})", cells, None, None, ["the paper ran one seed per cell: no test"]), not same_model
