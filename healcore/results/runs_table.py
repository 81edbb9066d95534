"""The store as a tidy runs table (one row per run folder, plus the queued runs of live grids) and an epochs table.

Torch-free: the dashboard imports this and opens in a couple of seconds.

- level: fraction of the encoder's layers corrupted (k/L); side: bottom, top, all (k = L), clean (k = 0); layers:
  which ones, as text ("1,2,3"), so that two custom selections of one size stay apart.
- dataset: a registry name, or a folder's name when a folder was given (its full path is `dataset_path`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from healcore.core.config import CONFIG_FIELDS, DATA_OPTION_FIELDS, LEGACY_VALUES, RunConfig
from healcore.core.errors import HealcoreError
from healcore.core.layers import parse_layers, side_of
from healcore.core.model_facts import num_layers
from healcore.core.paths import is_hub
from healcore.core.sources import label_of
from healcore.results import flags
from healcore.results.keys import CELL_KEYS
from healcore.store.grids import grid_records
from healcore.store.runs import RunStore, recorded_options

SPLIT_METRICS = [f"{s}_{k}" for s in ("validation", "test") for k in ("accuracy", "f1_weighted", "f1_macro")]
# The runs table's columns, whatever the store holds (empty, queued only, finished): readers never meet a missing one.
RUN_COLUMNS = (["run_id", *CONFIG_FIELDS, "state", "error", "started", "ended", "attempt", "progress", "damaged",
                "num_layers", "side", "n_layers", "level", "layers", *SPLIT_METRICS, "best_on_test", "best_epoch", "probe_f1",
                "angular_shift", "bi_shift", "train_rows",
                "healing", "majority_f1", "first_loss", "final_loss", "train_s", "eval_s", "tokens_per_s",
                "tokens_per_epoch", "hardware", "has_features", "has_analysis", "grid"])  # device: the config's, then
# the one a finished run names in its summary


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
    df = _spell_options_alike(df)
    df["dataset_path"] = df["dataset"]
    df["dataset"] = df["dataset"].map(dataset_labels(df["dataset"]))
    return flags.with_failures(df, CELL_KEYS)


def _run_row(store: RunStore, stored, defaults: dict) -> dict:
    config = {**defaults, **(stored.config or {})}
    status, summary = stored.status, stored.summary or {}
    progress = status.get("progress") if isinstance(status.get("progress"), dict) else {}
    # a run's data options in their one spelling, where it recorded them: two spellings of one experiment share a cell
    options = recorded_options(status) or recorded_options({"data_options": (summary.get("data") or {}).get("options")})
    config.update({"options_given": tuple(config.get(k, "") for k in DATA_OPTION_FIELDS), **(options or {}),
                   "options_recorded": options is not None})
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
        row["layers"] = layers_text(layers)
    row["angular_shift"], row["bi_shift"] = damage_shifts(corruption)
    best = summary.get("best") or {}
    for split in ("validation", "test"):
        for k in ("accuracy", "f1_weighted", "f1_macro"):
            row[f"{split}_{k}"] = (best.get(split) or {}).get(k)
    row["best_on_test"] = summary.get("best_on_test")
    row["best_epoch"] = summary.get("best_epoch")
    row["probe_f1"] = (summary.get("probe") or stored.probe or {}).get("f1_weighted")
    row["healing"] = summary.get("healing")
    row["train_rows"] = ((summary.get("data") or {}).get("sizes") or {}).get("train")  # after caps and validation
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
                rows.append({"run_id": run_id, **defaults, **config, "options_recorded": False,
                             "options_given": tuple(str({**defaults, **config}.get(k, "")) for k in DATA_OPTION_FIELDS),
                             "state": "queued", "damaged": [],
                             "progress": {}, "grid": record.get("name")})
    return rows


def _spell_options_alike(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that recorded no data options' spelling (queued, failed before loading, stored before it was kept) take
    the one recorded by a run of the same dataset and the same options as given, so they join its cells."""
    if "options_given" not in df:
        return df
    recorded = {}
    for r in df.to_dict("records"):
        if r.get("options_recorded"):
            recorded.setdefault((r["dataset"], r["options_given"]), tuple(r[k] for k in DATA_OPTION_FIELDS))
    for i in df.index[~df["options_recorded"].fillna(False).astype(bool)]:
        found = recorded.get((df.at[i, "dataset"], df.at[i, "options_given"]))
        if found:
            for k, v in zip(DATA_OPTION_FIELDS, found):
                df.at[i, k] = v
    return df


def _place_unfinished(df: pd.DataFrame) -> pd.DataFrame:
    """Runs without a corruption report (queued; older failed runs) are placed from their config and the model's
    layer count (known offline, or from finished runs of the same model)."""
    for col in ("side", "n_layers", "level", "num_layers", "layers"):
        if col not in df:
            df[col] = np.nan
    # a store whose runs are all queued has no side yet: an all-NaN column is float, and cannot take "bottom"
    df["side"] = df["side"].astype(object)
    df["layers"] = df["layers"].astype(object)
    known = df.dropna(subset=["num_layers"]).groupby("model")["num_layers"].first().to_dict()
    for i in df.index[df["side"].isna()]:
        model = df.at[i, "model"]
        L = known.get(model)
        if L is None:
            try:
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
        df.at[i, "layers"] = layers_text(layers)
    return df


def dataset_labels(datasets: pd.Series) -> dict[str, str]:
    """Short, unique labels: registry names as they are, hub datasets by their id (and config), folders by their
    name (parent/name when two share it)."""
    values = sorted(set(map(str, datasets)))
    labels = {value: label_of(value) for value in values}
    taken: dict[str, list[str]] = {}
    for value, label in labels.items():
        taken.setdefault(label, []).append(value)
    for label, owners in taken.items():
        if len(owners) > 1:
            for value in owners:
                if is_hub(value):
                    continue  # a hub id is unique as it is
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


def layers_text(layers: list[int]) -> str:
    """Which layers a run corrupted, as text for a cell's key ("" for none)."""
    return ",".join(str(int(x)) for x in layers)


def damage_shifts(corruption: dict) -> tuple[float | None, float | None]:
    """How much a run's damage changed how its layers turn their input, before fine-tuning (engine/internals'
    layer transitions): the mean, over its corrupted layers, of |damaged - pretrained| angular distance and Block
    Influence; for removed layers, the turn that is gone (the pretrained value: what Gromov et al. prune by). None
    where the run kept no transitions (clean runs, runs without an analysis sample, runs stored before them)."""
    t = corruption.get("transitions") if isinstance(corruption, dict) else None
    layers = corruption.get("layers") if isinstance(corruption, dict) else None
    if not isinstance(t, dict) or not layers:
        return None, None
    out = []
    for measure in ("angular", "block_influence"):
        before = (t.get("pretrained") or {}).get(measure) or []
        after = (t.get("damaged") or {}).get(measure) or []
        chosen = [i - 1 for i in layers if 0 < i <= len(before)]
        if not chosen:
            out.append(None)
        elif corruption.get("method") == "remove":
            out.append(float(sum(before[i] for i in chosen) / len(chosen)))
        elif len(after) == len(before):
            out.append(float(sum(abs(after[i] - before[i]) for i in chosen) / len(chosen)))
        else:
            out.append(None)
    return out[0], out[1]
