"""What identifies a run's cell and line in the results tables, derived from config.py's field groups, and the one
way a key's values become text (for grouping, filtering, ids and labels). Torch-free."""
from __future__ import annotations

import hashlib
import math

import pandas as pd

from healcore.core.config import CELL_FIELDS, CORRUPTION_FIELDS

PLACEMENT_KEYS = ["side", "n_layers", "level", "layers"]  # where a run's corrupted layers sit (from `corrupt` and L)
CELL_KEYS = ["model", "dataset", *PLACEMENT_KEYS] + [k for k in CELL_FIELDS if k not in ("model", "dataset", "corrupt")]
# what places a cell on its line; the rest of a cell's key is its line's
CORRUPTION_KEYS = {*PLACEMENT_KEYS, *CORRUPTION_FIELDS} - {"corrupt"}


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


def cell_id(row) -> str:
    """A short stable id of a grid cell, from its whole key (what a click on a heatmap cell or curve point selects;
    two cells that differ in any key, batch size or data cap included, never share one)."""
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    text = "|".join(text_of(get(k, None)) for k in CELL_KEYS)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def line_keys(table: pd.DataFrame) -> list[str]:
    """What a degradation line shares: everything in a cell's key but where its damage sits and what it is."""
    return [k for k in CELL_KEYS if k not in CORRUPTION_KEYS and k in table.columns]
