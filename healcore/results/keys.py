"""What identifies a run's cell, line and experiment in the results tables, derived from config.py's field groups,
and the one way a key's values become text (for grouping, filtering, ids) and words (for labels). Torch-free.

- a cell: every run sharing the experiment and its damage (CELL_KEYS); `cell_id` hashes its whole key;
- a line (an experiment): every cell sharing all but where the damage sits and what it is (`line_keys`);
- a comparison row: one experiment and kind of damage of each side, aligned on every setting but the compared one
  (`row_keys`); its cells sit in the row's columns by side and level (`align_keys`). Every view that sets cells
  side by side (healcore compare, the report, Export, the pages) aligns on these, so no row mixes experiments.
"""
from __future__ import annotations

import hashlib
import math

import pandas as pd

from healcore.core.config import CELL_FIELDS, CORRUPTION_FIELDS
from healcore.core.layers import setting_label

PLACEMENT_KEYS = ["side", "n_layers", "level", "layers"]  # where a run's corrupted layers sit (from `corrupt` and L)
CELL_KEYS = ["model", "dataset", *PLACEMENT_KEYS] + [k for k in CELL_FIELDS if k not in ("model", "dataset", "corrupt")]
# what places a cell on its line; the rest of a cell's key is its line's
CORRUPTION_KEYS = {*PLACEMENT_KEYS, *CORRUPTION_FIELDS} - {"corrupt"}
SIDE_ORDER = ("clean", "bottom", "top", "all")  # the sides of a line, from no damage to all of it


def as_text(values: pd.Series) -> pd.Series:
    """Values as strings for grouping, filtering and labels, a missing one as "-" (pandas' astype(str) keeps
    missing values missing, and a group key or a join then drops or breaks on them)."""
    return values.map(text_of)


def text_of(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def lr_text(lr) -> str:
    """A learning rate as every view writes it, in the paper's spelling: 1e-2, 5e-5, 1.5e-5; "–" when unknown."""
    import numpy as np

    if not isinstance(lr, (int, float, np.floating)) or not math.isfinite(lr):
        return "–"
    return np.format_float_scientific(float(lr), trim="-", exp_digits=1).replace("e+", "e")


def side_rank(side) -> int:
    """Where a side sorts: clean, bottom, top, all, then anything else."""
    return SIDE_ORDER.index(side) if side in SIDE_ORDER else len(SIDE_ORDER)


def key_id(row, keys) -> str:
    """A short stable id of a row's values of `keys` (a level rounded, so 0.5 and 3/6 are one): what a cell's, an
    aligned cell's or a comparison row's id hashes."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))

    def value(k):
        v = get(k, None)
        return round(float(v), 6) if k == "level" and isinstance(v, (int, float)) and math.isfinite(v) else v

    return hashlib.sha1("|".join(text_of(value(k)) for k in keys).encode()).hexdigest()[:12]


def cell_id(row) -> str:
    """A short stable id of a grid cell, from its whole key (what a click on a heatmap cell or curve point selects;
    two cells that differ in any key, batch size or data cap included, never share one)."""
    return key_id(row, CELL_KEYS)


def line_keys(table: pd.DataFrame) -> list[str]:
    """What a degradation line shares: everything in a cell's key but where its damage sits and what it is."""
    return [k for k in CELL_KEYS if k not in CORRUPTION_KEYS and k in table.columns]


# ------------------------------------------------------------------------------------------ comparison rows
# keys that place a cell, not conditions to compare: a comparison's columns (side, level), or its rows' frame
NOT_COMPARED = {"dataset", *PLACEMENT_KEYS}
# where a run's layers sit in one particular model: left out of an alignment (levels line up as percentages)
MODEL_PLACEMENT = ("n_layers", "layers")


def row_keys(columns, compared: str | None) -> list[str]:
    """What one row of a comparison is: every cell key but where its layers sit and the compared key (a row is one
    experiment and kind of damage of each side, whatever their spelling)."""
    drop = {*PLACEMENT_KEYS, compared}
    return [k for k in CELL_KEYS if k not in drop and k in columns]


def align_keys(columns, compared: str | None) -> list[str]:
    """What aligns a cell of A with a cell of B: its row's keys plus its side and level (a percentage, so a 6- and
    a 12-layer model line up)."""
    return [k for k in CELL_KEYS if k in columns and (k in ("side", "level") or k in row_keys(columns, compared))]


# ------------------------------------------------------------------------------------------ settings in words
BLANK_MEANS = {"text_column": "", "text_pair_column": "", "label_column": "", "train_split": "", "test_split": ""}


def setting_words(key: str, value) -> str:
    """A setting as a reader says it ("mean pooling", "all training rows", "label column stars"); "" where the
    value says nothing (a data option left to the usual names)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # a count that pandas turned float (1000.0) is said as written (1000)
    text = text_of(value)
    if key in BLANK_MEANS and text in ("", "-"):
        return ""
    if key == "pooling":
        return f"{text} pooling"
    if key == "mode":
        return {"full": "full fine-tuning", "linear_probe": "linear probe", "lora": "LoRA"}.get(text, text)
    if key == "lr_schedule":
        return f"{text} schedule"
    if key == "epochs":
        return f"{text} epoch" + ("" if text == "1" else "s")
    if key in ("max_train", "max_test"):
        rows = "training" if key == "max_train" else "test"
        return f"all {rows} rows" if text in ("0", "0.0") else f"{text} {rows} rows"
    if key == "text_pair_column" and text == "none":
        return "single text"
    if key.endswith("_column"):
        return f"{key[:-len('_column')].replace('_', ' ')} column {text}"
    if key.endswith("_split"):
        return f"{key[:-len('_split')]} split {text}"
    if key == "method":
        return {"reinit": "re-initialised"}.get(text, text)
    if key == "model":
        return text
    return f"{key.replace('_', ' ')} {text}"


def damage_label(cell) -> str:
    """Where a cell's damage sits and, where it is not the paper's, what it is ("bottom 33%, remove", "top 33%,
    heads 0,1"): how views that set several kinds of damage side by side name each."""
    words = [setting_label(cell["side"], cell["level"])]
    if cell["side"] != "clean":
        if text_of(cell.get("method", "reinit")) not in ("reinit", "-"):
            words.append(str(cell["method"]))
        if text_of(cell.get("heads", "all")) not in ("all", "-"):
            words.append(f"heads {cell['heads']}")
    return ", ".join(words)


def varying(frame: pd.DataFrame, keys) -> list[str]:
    """The keys that take more than one value in `frame`."""
    return [k for k in keys if k in frame and as_text(frame[k]).nunique() > 1]


def describe(frame: pd.DataFrame, keys) -> pd.Series:
    """Per row, the settings among `keys` that set it apart from the frame's other rows, in words ("" where nothing
    does): of each setting that varies, a value other than its most common one (the demo's row reads "", a second
    schedule's "linear schedule"). Rows that differ get different labels. How rows and lines are labelled."""
    keys = varying(frame, keys)
    if not keys:
        return pd.Series("", index=frame.index, dtype=object)
    texts = frame[keys].apply(as_text)
    common = {}
    for k in keys:  # a value more common than every other is left unsaid; on a tie every value is said
        counts = texts[k].value_counts()
        common[k] = counts.index[0] if counts.iloc[0] > counts.iloc[1] else None

    def words(k, value):  # a blank data option that sets a row apart still says so
        return setting_words(k, value) or f"{k.replace('_', ' ')} by its usual name"

    return pd.Series([", ".join(words(k, r[k]) for k in keys if t[k] != common[k])
                      for r, t in zip(frame[keys].to_dict("records"), texts.to_dict("records"))],
                     index=frame.index, dtype=object)
