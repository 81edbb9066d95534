"""Datasets: a registry of the paper's tasks, split policies and validation.

Every source (core/sources.py: registry names, folders of files, saved DatasetDicts, hub:<id>[:<config>]) ends as
the same three pandas frames (train, validation, test) with columns `text`, optional `text_pair`, and `label` (an
int index into `classes`). Problems that would waste a run (missing file or column, one class, unseen test labels,
classes left out of training, bad encoding) raise DataError before training.

Data sampling (caps, the paper re-split, the validation carve-out) uses a fixed seed, so every run of a
grid sees the same examples whatever its `seed`: differences between cells come from the model, not
from the data draw.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from healcore.core.errors import DataError
from healcore.core.sources import OPTION_FIELDS, Chosen, DataOptions, choose, open_source

DATA_SEED = 0
# The settings that decide a run's rows: what loaders key their caches on, and preflight checks once per value.
DATA_FIELDS = ("dataset", "split", "max_train", "max_test", "val_fraction", "allow_missing_classes", *OPTION_FIELDS)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    hub_id: str
    hub_config: str | None
    text_field: str
    pair_field: str | None
    label_field: str
    classes: tuple[str, ...]
    train_split: str
    test_split: str  # GLUE tasks: the labelled dev set, because test labels are hidden
    paper_sizes: tuple[int, int] | None  # the paper's Table 2 (train, test) sizes


REGISTRY: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("sst2", "stanfordnlp/sst2", None, "sentence", None, "label", ("negative", "positive"),
                "train", "validation", (56_000, 12_000)),
    DatasetInfo("imdb", "stanfordnlp/imdb", None, "text", None, "label", ("negative", "positive"),
                "train", "test", (25_000, 5_000)),
    DatasetInfo("ag_news", "fancyzhx/ag_news", None, "text", None, "label", ("World", "Sports", "Business", "Sci/Tech"),
                "train", "test", (48_000, 6_000)),
    DatasetInfo("emotion", "dair-ai/emotion", None, "text", None, "label",
                ("sadness", "joy", "love", "anger", "fear", "surprise"), "train", "test", (14_000, 4_000)),
    DatasetInfo("dbpedia_14", "fancyzhx/dbpedia_14", None, "content", None, "label",
                ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation",
                 "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"),
                "train", "test", (50_000, 12_000)),
    DatasetInfo("twitter_financial_news_topic", "zeroshot/twitter-financial-news-topic", None, "text", None, "label",
                ("Analyst Update", "Fed | Central Banks", "Company | Product News", "Treasuries | Corporate Debt",
                 "Dividend", "Earnings", "Energy | Oil", "Financials", "Currencies", "General News | Opinion",
                 "Gold | Metals | Materials", "IPO", "Legal | Regulation", "M&A | Investments", "Macro", "Markets",
                 "Politics", "Personnel Change", "Stock Commentary", "Stock Movement"),
                "train", "validation", (17_000, 4_000)),
    DatasetInfo("mrpc", "nyu-mll/glue", "mrpc", "sentence1", "sentence2", "label", ("not_equivalent", "equivalent"),
                "train", "validation", None),
    DatasetInfo("rte", "nyu-mll/glue", "rte", "sentence1", "sentence2", "label", ("entailment", "not_entailment"),
                "train", "validation", None),
)}


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    classes: list[str]
    source: str  # where the rows came from, for the run's summary
    notes: list[str] = field(default_factory=list)  # what was found by name, dropped or capped, for the log
    columns: dict = field(default_factory=dict)  # text / text_pair / label -> the source's column
    split_names: dict = field(default_factory=dict)  # train / test / validation -> the source's split
    options: dict = field(default_factory=dict)  # the data options in their one spelling (sources.canonical)

    @property
    def has_pair(self) -> bool:
        return "text_pair" in self.train.columns

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


# ------------------------------------------------------------------------------------------ reading
def data_root() -> Path | None:
    value = os.environ.get("HEALCORE_DATA", "").strip()
    return Path(value).expanduser() if value else None


def load_raw(name: str, options: DataOptions = DataOptions()) -> Chosen:
    """A dataset's rows as text[, text_pair], label, with the columns and splits chosen (core/sources.py)."""
    return choose(open_source(name, REGISTRY, data_root()), options)


# ------------------------------------------------------------------------------------------ shaping
def _normalise(df: pd.DataFrame, split: str) -> tuple[pd.DataFrame, int]:
    """Keep text/text_pair/label as strings; drop rows with empty text (counted, not silent)."""
    for col in ("text", "label"):
        if col not in df.columns:
            raise DataError(f"the {split} file has no {col!r} column (columns: {', '.join(map(str, df.columns))}); "
                            f"name the text and class columns with --text-column and --label-column")
    cols = ["text", "text_pair", "label"] if "text_pair" in df.columns else ["text", "label"]
    out = df[cols].copy()
    for col in cols:
        out[col] = out[col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    out["label"] = out["label"].str.strip()
    if (out["label"] == "").any():
        raise DataError(f"the {split} file has {(out['label'] == '').sum()} row(s) with an empty label; fill or drop them")
    keep = out["text"].str.strip() != ""
    if "text_pair" in out.columns:
        keep &= out["text_pair"].str.strip() != ""
    dropped = int((~keep).sum())
    return out[keep].reset_index(drop=True), dropped


def _is_int_like(values: pd.Series) -> bool:
    return bool(values.str.fullmatch(r"-?\d+").all())


def _class_list(train_labels: pd.Series, hint: tuple[str, ...] | None) -> tuple[list[str], pd.Series]:
    """Class names and train labels mapped to names. Integer labels index the registry's class list."""
    if hint is not None:
        if _is_int_like(train_labels):
            ids = train_labels.astype(int)
            if ids.min() < 0 or ids.max() >= len(hint):
                raise DataError(f"label ids must be 0..{len(hint) - 1} for this dataset; found {ids.min()}..{ids.max()}")
        return list(hint), train_labels
    if _is_int_like(train_labels):
        return [str(i) for i in sorted(train_labels.astype(int).unique())], train_labels
    return sorted(train_labels.unique()), train_labels


def _to_ids(labels: pd.Series, classes: list[str], hint: tuple[str, ...] | None, split: str) -> np.ndarray:
    if hint is not None and _is_int_like(labels):
        ids = labels.astype(int).to_numpy()
        if ids.min() < 0 or ids.max() >= len(hint):
            raise DataError(f"{split} label ids must be 0..{len(hint) - 1}; found {ids.min()}..{ids.max()}")
        return ids
    index = {c: i for i, c in enumerate(classes)}
    if hint is None and _is_int_like(labels):
        labels = labels.astype(int).astype(str)
    unknown = sorted(set(labels) - set(index))
    if unknown and hint is None:
        raise DataError(f"{split} has label(s) {unknown[:5]} never seen in train; add them to train or drop them "
                        f"from {split}")
    if unknown:
        raise DataError(f"{split} has label(s) {unknown[:5]} that are not classes of this dataset "
                        f"({', '.join(classes[:8])}{'...' if len(classes) > 8 else ''}); fix the labels")
    return labels.map(index).to_numpy()


def stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified sample of size n (largest-remainder shares per class), in original order."""
    n_total = len(labels)
    if n >= n_total:
        return np.arange(n_total)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / n_total
    share = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - share), kind="stable")[: n - share.sum()]:
        share[i] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, share) if k]
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=int)


def _rest(n_total: int, taken: np.ndarray) -> np.ndarray:
    mask = np.ones(n_total, dtype=bool)
    mask[taken] = False
    return np.flatnonzero(mask)


def build_splits(train: pd.DataFrame, test: pd.DataFrame, hint: tuple[str, ...] | None, source: str, *,
                 split: str = "standard", paper_sizes: tuple[int, int] | None = None, max_train: int = 0,
                 max_test: int = 0, val_fraction: float = 0.1, allow_missing_classes: bool = False,
                 validation: pd.DataFrame | None = None) -> Splits:
    """The three splits of a run. A `validation` frame (the source's own split) is used as it is; without one,
    `val_fraction` of train is carved out, stratified."""
    notes: list[str] = []
    train, dropped_train = _normalise(train, "train")
    test, dropped_test = _normalise(test, "test")
    if dropped_train or dropped_test:
        notes.append(f"dropped empty texts: {dropped_train} train, {dropped_test} test")
    if ("text_pair" in train.columns) != ("text_pair" in test.columns):
        raise DataError("train and test disagree on the 'text_pair' column; give it in both files or neither")
    if validation is not None:
        validation, _ = _normalise(validation, "validation")
        if ("text_pair" in validation.columns) != ("text_pair" in train.columns):
            raise DataError("train and validation disagree on the 'text_pair' column; give it in both or neither")
    for df, name in ((train, "train"), (test, "test")):
        if df.empty:
            raise DataError(f"the {name} split has no usable rows (all texts empty?); add examples")
    classes, _ = _class_list(train["label"], hint)
    y_train = _to_ids(train["label"], classes, hint, "train")
    y_test = _to_ids(test["label"], classes, hint, "test")
    if len(np.unique(y_train)) < 2:
        raise DataError(f"train has only one class ({classes[int(y_train[0])]!r}); classification needs at least two")
    unseen = sorted(set(np.unique(y_test)) - set(np.unique(y_train)))
    if unseen:
        raise DataError(f"test has label(s) {[classes[i] for i in unseen][:5]} never seen in train; "
                        f"add them to train or drop them from test")
    train = train.assign(label=y_train)
    test = test.assign(label=y_test)
    if validation is not None:
        validation = validation.assign(label=_to_ids(validation["label"], classes, hint, "validation"))
    rng = np.random.default_rng(DATA_SEED)

    if split == "paper":
        if paper_sizes is None:
            raise DataError("split=paper needs a registry dataset with the paper's sizes "
                            "(sst2, imdb, ag_news, emotion, dbpedia_14, twitter_financial_news_topic); use split=standard")
        pool = pd.concat([train, test], ignore_index=True)
        want_train, want_test = paper_sizes
        scale = min(1.0, len(pool) / (want_train + want_test))
        n_test = int(round(want_test * scale))
        test_idx = stratified_take(pool["label"].to_numpy(), n_test, rng)
        rest = pool.iloc[_rest(len(pool), test_idx)].reset_index(drop=True)
        train = rest.iloc[stratified_take(rest["label"].to_numpy(), int(round(want_train * scale)), rng)]
        test = pool.iloc[test_idx]
        notes.append(f"paper split: {len(train)} train / {len(test)} test (paper: {want_train}/{want_test}"
                     f"{', capped by what exists' if scale < 1 else ''})")
    if max_train and len(train) > max_train:
        train = train.iloc[stratified_take(train["label"].to_numpy(), max_train, rng)]
        notes.append(f"train capped to {max_train}")
    if max_test and len(test) > max_test:
        test = test.iloc[stratified_take(test["label"].to_numpy(), max_test, rng)]
        notes.append(f"test capped to {max_test}")
    train = train.reset_index(drop=True)
    if validation is None:
        n_val = int(round(len(train) * val_fraction))
        val_idx = stratified_take(train["label"].to_numpy(), n_val, rng) if n_val else np.array([], dtype=int)
        validation = train.iloc[val_idx].reset_index(drop=True)
        train = train.iloc[_rest(len(train), val_idx)].reset_index(drop=True)
    else:
        validation = validation.reset_index(drop=True)
    if len(np.unique(train["label"])) < 2:
        raise DataError("after caps and the validation carve-out, train has one class; raise max_train")
    absent = _absent_from_training(train, validation, test, classes)
    if absent and not allow_missing_classes:
        raise DataError(f"{absent} after the caps and the validation carve-out; raise max_train or lower "
                        f"val_fraction, or pass --allow-missing-classes to score them anyway")
    if absent:
        notes.append(f"warning: {absent} (allowed: allow_missing_classes)")
    return Splits(train, validation, test.reset_index(drop=True), classes, source, notes)


def _absent_from_training(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame,
                          classes: list[str]) -> str:
    """The classes scored (in validation or test) that training never sees, in words; "" when there are none."""
    seen = set(np.unique(train["label"]))
    parts = []
    for name, split in (("test", test), ("validation", validation)):
        missing = sorted(set(np.unique(split["label"])) - seen) if len(split) else []
        if missing:
            rows = int(split["label"].isin(missing).sum())
            names = ", ".join(repr(classes[i]) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
            parts.append(f"{len(missing)} class(es) of {name} ({names}; {rows} rows) never appear in train")
    return "; ".join(parts)


def load_splits(cfg) -> Splits:
    """The three splits a run uses, from its config."""
    chosen = load_raw(cfg.dataset, DataOptions.of(cfg))
    info = REGISTRY.get(cfg.dataset)
    splits = build_splits(chosen.train, chosen.test, chosen.hint, chosen.where, split=cfg.split,
                          paper_sizes=info.paper_sizes if info else None, max_train=cfg.max_train,
                          max_test=cfg.max_test, val_fraction=cfg.val_fraction,
                          allow_missing_classes=cfg.allow_missing_classes, validation=chosen.validation)
    splits.notes[:0] = chosen.notes
    splits.columns, splits.split_names, splits.options = chosen.columns, chosen.splits, chosen.options
    return splits


def canonical_options(cfg) -> dict[str, str] | None:
    """A config's data options in their one spelling (sources.canonical), read from its dataset; None where the
    dataset cannot be read here. All-blank options are canonical as they are, without reading anything."""
    options = DataOptions.of(cfg)
    if not any(getattr(options, k) for k in OPTION_FIELDS):
        return {k: "" for k in OPTION_FIELDS}
    try:
        return dict(load_raw(cfg.dataset, options).options)
    except (DataError, OSError):
        return None


def export_files(name: str, options: DataOptions = DataOptions()) -> dict[str, bytes]:
    """A dataset (any kind --dataset takes) in healcore's folder format, as file name -> bytes: train.csv.gz,
    test.csv.gz (and validation.csv.gz where the source has that split), columns text[, text_pair], label with class
    names. Nothing is written here (the foundations read; `healcore data export` writes through the store's one
    writer)."""
    import io

    chosen = load_raw(name, options)
    splits = build_splits(chosen.train, chosen.test, chosen.hint, chosen.where, val_fraction=0.0,
                          validation=chosen.validation)
    parts = [("train", splits.train), ("test", splits.test)]
    if chosen.validation is not None:
        parts.append(("validation", splits.validation))
    files = {}
    for split_name, df in parts:
        named = df.assign(label=[splits.classes[i] for i in df["label"]])
        buf = io.BytesIO()
        named.to_csv(buf, index=False, compression={"method": "gzip", "mtime": 0})
        files[f"{split_name}.csv.gz"] = buf.getvalue()
    return files
