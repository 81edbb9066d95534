"""Where a dataset's rows come from, and which of its columns and splits hold the texts and the labels.

`--dataset` is one of four kinds:
- a registry name (sst2, ag_news, ...): $HEALCORE_DATA/<name>/ when that folder exists, else the hub;
- a folder of `train`/`test` files (and an optional `validation` one): CSV, CSV.gz, JSONL, JSONL.gz or Parquet;
- a folder written by `DatasetDict.save_to_disk` (read with `datasets.load_from_disk`);
- `hub:<id>[:<config>]`: anything `datasets.load_dataset` loads, e.g. hub:tweet_eval:sentiment, hub:SetFit/sst5.
  It goes through the datasets cache: offline, a dataset loaded once before still loads; one that was not is one
  line saying how to bring it (`healcore data export hub:... DIR` where the hub is reachable).

Whatever the kind, columns and splits are chosen one way (`choose`): the option when given (text_column,
text_pair_column, label_column, train_split, test_split), else the registry's, else the first usual name present.
A column found by its name is reported in the run's log and summary, never chosen silently. Class names come from
a `ClassLabel` feature where the source has one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from healcore.core.config import DATA_OPTION_FIELDS
from healcore.core.errors import DataError, first_line, shown
from healcore.core.paths import hub_parts, is_hub

FILE_KINDS = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
NO_PAIR = "none"  # text_pair_column=none: a single-text task even where a pair column exists

# The usual names, in the order they are tried.
TEXT_NAMES = ("text", "sentence", "review", "content", "document", "tweet", "body", "sentence1", "premise",
              "question1")
PAIRS = {"text": "text_pair", "sentence1": "sentence2", "premise": "hypothesis", "question1": "question2"}
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category", "stars", "rating", "target")
TRAIN_NAMES = ("train",)
TEST_NAMES = ("test", "validation")
VALIDATION_NAMES = ("validation", "dev", "valid")


@dataclass(frozen=True)
class DataOptions:
    """Which columns and splits to read; "" = the registry's choice, else detected by name."""

    text_column: str = ""
    text_pair_column: str = ""
    label_column: str = ""
    train_split: str = ""
    test_split: str = ""

    @classmethod
    def of(cls, cfg) -> "DataOptions":
        """The options of a RunConfig (or anything with these attributes)."""
        return cls(**{f.name: getattr(cfg, f.name, "") or "" for f in fields(cls)})


OPTION_FIELDS = DATA_OPTION_FIELDS  # config.py's one list; DataOptions has these fields in this order (tested)


@dataclass
class Source:
    """A dataset's splits as the source has them, each read only when chosen."""

    name: str  # what the user wrote
    where: str  # "folder /x", "hub tweet_eval/sentiment", "saved DatasetDict /y"
    splits: dict[str, Callable[[], pd.DataFrame]]  # split name -> its rows, with the source's own columns
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> ClassLabel names
    defaults: DataOptions = DataOptions()  # the registry's columns and splits
    hint: tuple[str, ...] | None = None  # a registry dataset's class names (integer labels index them)
    own_validation: bool = True  # use a validation split the source has (registry datasets carve theirs)
    split_word: str = "split"  # how messages name a split: a folder's are its files

    def no_split(self, what: str, hint: str) -> DataError:
        available = sorted(self.splits)
        listed = ", ".join(available) or "none"
        if self.split_word == "file":
            return DataError(f"{self.name} has no {what} file (its files: {listed}; {', '.join(FILE_KINDS)}); "
                             f"{hint}")
        return DataError(f"{self.name} has no {what} split (its splits: {listed}); {hint}")


@dataclass
class Chosen:
    """The rows a run reads, as text[, text_pair], label (label as the source wrote it), and how they were found."""

    train: pd.DataFrame
    test: pd.DataFrame
    validation: pd.DataFrame | None
    hint: tuple[str, ...] | None  # class names that integer labels index (ClassLabel or registry)
    where: str
    columns: dict[str, str | None]  # text / text_pair / label -> the source's column
    splits: dict[str, str | None]  # train / test / validation -> the source's split
    notes: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # the data options in their one spelling (canonical)


# ------------------------------------------------------------------------------------------ sources
def label_of(name: str) -> str:
    """How a dataset is labelled on screen and in exports: a hub dataset by its id (and config), a folder by its
    name, a registry dataset as it is."""
    name = str(name)
    if is_hub(name):
        repo, config = hub_parts(name)
        return f"{repo}:{config}" if config else repo
    path = Path(name.rstrip("/"))
    return path.name if ("/" in name or name.startswith((".", "~"))) and path.name else name


def open_source(name: str, registry: dict, data_root: Path | None) -> Source:
    """The Source a --dataset value names (see the module's docstring)."""
    info = registry.get(name)
    if info is not None:
        if data_root is not None and os.path.isdir(data_root / name):
            return Source(name, f"folder {data_root / name}", _file_splits(data_root / name), hint=info.classes,
                          own_validation=False, split_word="file")
        defaults = DataOptions(info.text_field, info.pair_field or NO_PAIR, info.label_field, info.train_split,
                               info.test_split)
        where = f"hub {info.hub_id}" + (f"/{info.hub_config}" if info.hub_config else "")
        try:
            dd = hub_dataset(info.hub_id, info.hub_config)
        except DataError as err:
            where_else = (f"HEALCORE_DATA={data_root} has no {name}/ folder" if data_root else
                          "HEALCORE_DATA is not set")
            raise DataError(f"dataset {name!r} could not be loaded from the hub ({err}) and {where_else}; offline, "
                            f"set HEALCORE_DATA to a folder holding {name}/train.csv.gz and test.csv.gz") from None
        return _dict_source(name, where, dd, defaults, info.classes, own_validation=False)
    if is_hub(name):
        repo, config = hub_parts(name)
        where = f"hub {repo}" + (f"/{config}" if config else "")
        try:
            dd = hub_dataset(repo, config)
        except DataError as err:
            raise DataError(f"dataset {shown(name)}: {err}") from None
        return _dict_source(name, where, dd)
    folder = Path(name).expanduser()
    if os.path.isdir(folder):  # (os.path: False, not an OSError, for a name too long)
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            return _dict_source(name, f"saved DatasetDict {folder.resolve()}", _load_from_disk(folder))
        return Source(name, f"folder {folder.resolve()}", _file_splits(folder), split_word="file")
    raise DataError(f"unknown dataset {shown(name)}: not a registry name ({', '.join(registry)}), not a folder, and "
                    f"not hub:<id>[:<config>]")


def _file_splits(folder: Path) -> dict[str, Callable[[], pd.DataFrame]]:
    """Each data file of a folder as a split named by its stem (train.csv.gz -> train)."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        for ext in FILE_KINDS:
            if path.name.endswith(ext) and path.is_file() and not path.name.startswith("."):
                by_stem.setdefault(path.name[: -len(ext)], []).append(path)
                break
    out = {}
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            out[stem] = _several(folder, stem, paths)
        else:
            out[stem] = (lambda p=paths[0]: read_table(p))
    return out


def _several(folder: Path, stem: str, paths: list[Path]) -> Callable[[], pd.DataFrame]:
    def fail() -> pd.DataFrame:
        raise DataError(f"{folder} has several {stem} files ({', '.join(p.name for p in paths)}); keep one")
    return fail


def read_table(path: Path) -> pd.DataFrame:
    """Read one CSV/CSV.gz/JSONL/Parquet file; every failure becomes a one-line DataError."""
    name = path.name
    try:
        if name.endswith(".parquet"):
            df = pd.read_parquet(path)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            df = pd.read_json(path, lines=True, encoding="utf-8", dtype=False)
        else:
            df = pd.read_csv(path, encoding="utf-8", encoding_errors="strict", keep_default_na=False, dtype=str)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; re-save it with UTF-8 encoding") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; it needs a header row and at least one example") from None
    except Exception as err:  # noqa: BLE001 - pandas/pyarrow/json raise many types for a malformed file
        raise DataError(f"{path} could not be read as {name.split('.', 1)[-1]} ({first_line(err)[:160]}); fix or "
                        f"re-export it") from None
    if df.empty:
        raise DataError(f"{path} has no rows; it needs at least one example")
    return df


def _dict_source(name: str, where: str, dd, defaults: DataOptions = DataOptions(),
                 hint: tuple[str, ...] | None = None, own_validation: bool = True) -> Source:
    """A datasets.DatasetDict as a Source: splits converted to pandas when chosen, ClassLabel names kept."""
    names: dict[str, tuple[str, ...]] = {}
    for split in dd.values():
        for column, feature in split.features.items():
            if type(feature).__name__ == "ClassLabel":
                names.setdefault(column, tuple(feature.names))
    splits = {split: (lambda s=split: dd[s].to_pandas()) for split in dd}
    return Source(name, where, splits, names, defaults, hint, own_validation)


def _load_from_disk(folder: Path):
    try:
        import datasets

        loaded = datasets.load_from_disk(str(folder))
    except Exception as err:  # noqa: BLE001 - a damaged or foreign folder: one line
        raise DataError(f"{folder} looks like a saved datasets folder but cannot be loaded ({first_line(err)[:160]}); "
                        f"save it again with DatasetDict.save_to_disk") from None
    if type(loaded).__name__ == "Dataset":  # a single Dataset saved alone: it is the train split
        raise DataError(f"{folder} holds one saved Dataset, not a DatasetDict with train and test splits; save "
                        f"DatasetDict({{'train': ..., 'test': ...}}) instead")
    return loaded


@contextmanager
def _offline(offline: bool):
    """datasets' offline mode for one call: where the hub cannot be reached it answers from its cache at once
    (without it, the client retries for about 25 s before failing)."""
    import datasets

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def hub_dataset(repo: str, config: str | None):
    """datasets.load_dataset(repo, config) through the datasets cache; offline, from the cache alone."""
    import datasets

    from healcore.core.model_facts import hub_reachable

    local = os.path.isdir(Path(repo).expanduser())  # a repository folder laid out as on the hub
    offline = not local and (datasets.config.HF_HUB_OFFLINE or not hub_reachable())
    try:
        with _offline(offline):
            return datasets.load_dataset(str(Path(repo).expanduser()) if local else repo, config)
    except Exception as err:  # noqa: BLE001 - unknown id, missing config, no cache: one line each
        text = first_line(err)
        named = f"{repo}" + (f":{config}" if config else "")
        if offline:
            raise DataError(f"{named} is not in this machine's datasets cache ({datasets.config.HF_DATASETS_CACHE}) "
                            f"and the hub cannot be reached; where it can, run `healcore data export hub:{named} DIR`, "
                            f"copy DIR here and pass --dataset DIR") from None
        if "config" in text.lower() and ("missing" in text.lower() or "available" in text.lower()):
            raise DataError(f"{named}: {text[:200]}") from None
        raise DataError(f"{named} could not be loaded ({text[:200]})") from None


# ------------------------------------------------------------------------------------------ choosing
def choose(source: Source, options: DataOptions) -> Chosen:
    """The train, test (and validation, where the source has one) rows with the chosen columns, renamed to text,
    text_pair and label; every choice made by name is written in `notes`."""
    notes: list[str] = []
    available = sorted(source.splits)
    train_split = _split(source, options.train_split or source.defaults.train_split, TRAIN_NAMES, "train", notes)
    test_split = _split(source, options.test_split or source.defaults.test_split, TEST_NAMES, "test", notes,
                        avoid=train_split)
    validation_split = None
    if source.own_validation:
        validation_split = next((s for s in VALIDATION_NAMES if s in source.splits and s not in
                                 (train_split, test_split)), None)
        if validation_split:
            notes.append(f"validation: the source's {validation_split!r} split (no carve-out from train)")
    if test_split == train_split:
        raise DataError(f"train and test are both the {train_split!r} split of {source.name}; give --test-split one "
                        f"of {', '.join(s for s in available if s != train_split) or '(no other split)'}")
    train = source.splits[train_split]()
    columns = _columns(source, options, train, notes)
    frames = {"train": train, "test": source.splits[test_split]()}
    if validation_split:
        frames["validation"] = source.splits[validation_split]()
    out = {}
    for role, df in frames.items():
        split_name = {"train": train_split, "test": test_split, "validation": validation_split}[role]
        missing = [c for c in columns.values() if c and c not in df.columns]
        if missing:
            raise DataError(f"the {split_name!r} split of {source.name} has no column {missing[0]!r} (its columns: "
                            f"{', '.join(map(str, df.columns))})")
        keep = {columns["text"]: "text", columns["label"]: "label"}
        if columns["text_pair"]:
            keep[columns["text_pair"]] = "text_pair"
        out[role] = df[list(keep)].rename(columns=keep)
    label = columns["label"]
    _check_labels(out["train"]["label"], label, source.name)
    hint = source.hint or source.class_names.get(label)  # a registry's names keep their published order
    if not source.hint and source.class_names.get(label):
        notes.append(f"class names from the {label!r} column's ClassLabel feature")
    for role in ("test", "validation"):
        if role in out:
            _hidden_labels(out[role]["label"], role, {"test": test_split, "validation": validation_split}[role],
                           source)
    return Chosen(out["train"], out["test"], out.get("validation"), hint, source.where, columns,
                  {"train": train_split, "test": test_split, "validation": validation_split}, notes,
                  canonical(source, columns, train_split, test_split, train))


def resolved(columns: dict, train_split: str, test_split: str) -> dict[str, str]:
    """Chosen columns and splits as the five data options that would name them explicitly."""
    return {"text_column": columns["text"], "text_pair_column": columns["text_pair"] or NO_PAIR,
            "label_column": columns["label"], "train_split": train_split, "test_split": test_split}


def canonical(source: Source, columns: dict, train_split: str, test_split: str, train: pd.DataFrame) \
        -> dict[str, str]:
    """The data options in one spelling: an option that picks what leaving it blank picks is blank, any other is the
    column or split it resolved to. Two runs whose options resolve alike (text_column review, and text_column left
    to the usual names that find review) are one experiment (RunConfig.experiment_id with these options)."""
    chosen = resolved(columns, train_split, test_split)
    try:
        default_train = _split(source, source.defaults.train_split, TRAIN_NAMES, "train", [])
        default_test = _split(source, source.defaults.test_split, TEST_NAMES, "test", [], avoid=default_train)
        frame = train if default_train == train_split else source.splits[default_train]()
        default = resolved(_columns(source, DataOptions(), frame, []), default_train, default_test)
    except DataError:  # blank options would not load this source at all: every chosen one is meaningful
        default = {}
    return {k: ("" if default.get(k) == v else v) for k, v in chosen.items()}


def _split(source: Source, given: str, usual: tuple[str, ...], role: str, notes: list[str], avoid: str = "") -> str:
    if given:
        if given not in source.splits:
            raise source.no_split(repr(given), f"choose --{role}-split from those")
        return given
    found = next((s for s in usual if s in source.splits and s != avoid), None)
    if found is None:
        raise source.no_split(role, f"add one, or name another with --{role}-split")
    if found != usual[0]:
        notes.append(f"{role} split: {found!r} (the source has no {usual[0]!r})")
    return found


def _columns(source: Source, options: DataOptions, train: pd.DataFrame, notes: list[str]) -> dict[str, str | None]:
    names = [str(c) for c in train.columns]
    listed = ", ".join(names)

    def pick(option: str, default: str, usual: tuple[str, ...], what: str, flag: str) -> str:
        given = option or default
        if given:
            if given not in names:
                raise DataError(f"{source.name} has no column {given!r} (its columns: {listed}); choose {flag} from "
                                f"those")
            return given
        found = next((n for n in usual if n in names), None)
        if found is None:
            raise DataError(f"{source.name} has no {what} column by a usual name ({', '.join(usual[:6])}...); its "
                            f"columns: {listed}; name it with {flag}")
        if found != what:  # healcore's own format (text, label) is no guess; any other name is reported
            detected.append(f"{what}={found!r}")
        return found

    detected: list[str] = []
    text = pick(options.text_column, source.defaults.text_column, TEXT_NAMES, "text", "--text-column")
    label = pick(options.label_column, source.defaults.label_column, LABEL_NAMES, "label", "--label-column")
    if text == label:
        raise DataError(f"the text and label columns of {source.name} are both {text!r}; name each with --text-column "
                        f"and --label-column")
    pair_option = options.text_pair_column or source.defaults.text_pair_column
    if pair_option == NO_PAIR:
        pair = None
    elif pair_option:
        if pair_option not in names:
            raise DataError(f"{source.name} has no column {pair_option!r} (its columns: {listed}); choose "
                            f"--text-pair-column from those, or none")
        pair = pair_option
    else:
        pair = PAIRS.get(text) if PAIRS.get(text) in names else None
        if pair and pair != "text_pair":
            detected.append(f"text_pair={pair!r}")
    if detected:
        notes.append(f"columns found by name: {', '.join(detected)} (set text_column / text_pair_column / "
                     f"label_column to choose others)")
    return {"text": text, "text_pair": pair, "label": label}


def _check_labels(labels: pd.Series, column: str, name: str) -> None:
    """A label column must hold classes: names, or whole numbers (a float column of measurements is a regression
    target, which classification cannot learn)."""
    numeric = pd.to_numeric(labels, errors="coerce")  # a CSV's numbers arrive as text
    if len(numeric) and numeric.notna().all():
        values = numeric.to_numpy(dtype=float)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            distinct = len(np.unique(values))
            raise DataError(f"label column {column!r} of {name} holds fractional numbers ({distinct:,} distinct, e.g. "
                            f"{', '.join(f'{v:g}' for v in values[:3])}): a regression target, not classes; choose a "
                            f"column of class names or ids with --label-column")


def _hidden_labels(labels: pd.Series, role: str, split: str, source: Source) -> None:
    """Benchmarks publish their test splits without labels (all -1): scoring on them is meaningless."""
    numeric = pd.to_numeric(labels, errors="coerce")
    if len(numeric) and numeric.notna().all() and (numeric < 0).all():
        others = [s for s in sorted(source.splits) if s != split]
        raise DataError(f"the {split!r} split of {source.name} has no labels (all {int(numeric.iloc[0])}: hidden, as "
                        f"benchmarks publish their test sets); score another split with --test-split "
                        f"({', '.join(others)})")
