"""`healcore compare`: the sides a command line names, compared, as a table (compare_tables.export). Every mistake
is one line: a key that does not vary (the keys that do are named), A equal to B, a second store that is not a
store or matches nothing, an unknown metric. Torch-free."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from healcore.core.errors import ConfigError
from healcore.core.paths import output_file, short
from healcore.results import compare as cmp
from healcore.results.cell_table import cells
from healcore.results.compare_tables import export
from healcore.results.keys import as_text
from healcore.results.runs_table import load_runs
from healcore.store.io import atomic_write_bytes
from healcore.store.runs import RunStore


def sides_for(root: str, by: str | None = None, a: str | None = None, b: str | None = None,
              store2: str | None = None, against: str | None = None, paper_model: str | None = None,
              where: list[str] | tuple = ()) -> tuple[cmp.Side, cmp.Side, str | None, bool]:
    """(A, B, the compared key, relative) from command-line words."""
    if sum(x is not None for x in (by, store2, against)) != 1:
        raise ConfigError("say what to compare: --by KEY (two values of a setting), --store2 DIR (another store) or "
                          "--against paper")
    runs, table = _store(root)
    table = _where(table, where)
    if store2 is not None:
        runs2, table2 = _store(store2, second=True)
        if RunStore(store2).root == RunStore(root).root:
            raise ConfigError("--store2 is this store; give another run store")
        side_a, side_b = cmp.store_sides(root, runs, table, store2, runs2, _where(table2, where))
        return side_a, side_b, None, False
    if against is not None:
        side_b, relative = cmp.paper_side(table, paper_model)
        return cmp.Side(f"store {root}", table, runs, root), side_b, cmp.PAPER_KEY, relative
    if by not in cmp.comparable_keys(table):
        raise ConfigError(cmp.why_not_comparable(table, by) + " (or narrow the store with --where KEY=VALUE)")
    values = cmp.values_of(table, by)
    a = a if a is not None else values[0]
    b = b if b is not None else next(iter(cmp.partners_of(table, by, a)), values[-1])
    side_a, side_b = cmp.split(table, runs, by, a, b, root)
    return side_a, side_b, by, False


def _store(root: str, second: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = Path(root).expanduser()
    if not path.is_dir() or not RunStore(path).run_ids():
        what = "--store2" if second else "--store"
        raise ConfigError(f"{what} {short(root)} is not a run store (no run folders in it); give a folder written by "
                          f"healcore --store")
    runs = load_runs(path, include_queued=False)
    return runs, cells(runs)


def _where(table: pd.DataFrame, where) -> pd.DataFrame:
    for pair in where or ():
        if "=" not in pair:
            raise ConfigError(f"--where {short(pair)!r} must look like KEY=VALUE, e.g. --where epochs=6")
        key, value = (x.strip() for x in pair.split("=", 1))
        if key not in table:
            raise ConfigError(f"--where {key}: not a setting of a cell; use one of "
                              f"{', '.join(k for k in table.columns if k in cmp.CELL_KEYS)}")
        kept = table[as_text(table[key]) == value]
        if kept.empty:
            raise ConfigError(f"--where {key}={short(value)}: no cell has it; values: "
                              f"{', '.join(sorted(as_text(table[key]).unique()))}")
        table = kept
    return table


def run_compare(root: str, *, style: str = "md", metric: str = "f1", correction: str = "holm",
                out: str | None = None, **sides) -> str:
    """The comparison table as text (written atomically to `out` when given; its path is checked first)."""
    path = output_file(out) if out else None
    a, b, key, relative = sides_for(root, **sides)
    result = cmp.compare(a, b, key, metric, correction, relative)
    if result.empty:
        raise ConfigError(f"{a.name} and {b.name} have no cells to compare; widen --where")
    text = export(result, style)
    if path is not None:
        atomic_write_bytes(path, text.encode())
    return text

