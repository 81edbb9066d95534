"""Cached loaders and small widgets shared by the pages. Reads the store through healcore.results only."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from healcore import results
from healcore.charts import setting_label  # noqa: F401 - pages use common.setting_label
from healcore.errors import HealcoreError
from healcore.paths import confine
from healcore.store import RunStore

PAGE_FILES = {p.stem.split("_", 1)[1].replace("_", " "): f"pages/{p.name}"
              for p in sorted((Path(__file__).resolve().parent.parent / "pages").glob("*.py"))}


def page(title: str) -> str:
    """The file of a page by its title, for st.page_link."""
    return PAGE_FILES[title]


def store_root() -> str:
    """The run store: the sidebar's choice (kept across pages), else $HEALCORE_RUNS, else ./runs."""
    if "store_root" not in st.session_state:
        st.session_state["store_root"] = os.environ.get("HEALCORE_RUNS", "runs")
    value = st.sidebar.text_input("Run store", st.session_state["store_root"],
                                  help="Folder with one sub-folder per run (healcore --store); relative paths "
                                       "are relative to where streamlit was started.")
    st.session_state["store_root"] = value.strip() or "runs"
    return st.session_state["store_root"]


def store_version(root: str) -> tuple:
    """Changes whenever a run folder's status or summary changes, so cached tables refresh."""
    p = Path(root)
    if not p.is_dir():
        return (0, 0.0)
    latest, n = 0.0, 0
    with os.scandir(p) as entries:
        for e in entries:
            if e.is_dir() and not e.name.startswith("."):
                n += 1
                for name in ("status.json", "summary.json"):
                    try:
                        latest = max(latest, os.stat(os.path.join(e.path, name)).st_mtime)
                    except OSError:
                        pass
    return (n, latest)


@st.cache_data(show_spinner=False, max_entries=8)
def runs_table(root: str, version: tuple) -> pd.DataFrame:
    return results.load_runs(root)


@st.cache_data(show_spinner=False, max_entries=8)
def cells_table(root: str, version: tuple) -> pd.DataFrame:
    return results.cells(runs_table(root, version))


@st.cache_data(show_spinner=False, max_entries=32)
def epochs_table(root: str, version: tuple, run_ids: tuple[str, ...]) -> pd.DataFrame:
    return results.load_epochs(root, list(run_ids))


def load() -> tuple[str, pd.DataFrame]:
    root = store_root()
    try:
        confine(root, "run store")
        RunStore(root)
    except HealcoreError as err:  # outside the allowed folders, or a file: say so, never a traceback
        st.error(str(err))
        st.stop()
    return root, runs_table(root, store_version(root))


def load_nonempty(completed: bool = False) -> tuple[str, pd.DataFrame]:
    """load(), but a store with no runs (or no completed run) shows the next step and stops the page."""
    root, runs = load()
    if runs.empty or (completed and not (runs["state"] == "completed").any()):
        empty_store_notice(root)
        st.stop()
    return root, runs


def empty_store_notice(root: str) -> None:
    st.info(f"No runs in `{root}` yet. Start with the **demo** grid on the Launch page "
            f"(minilm-l6 on a slice of SST-2, about 10 minutes on a 2-core CPU), or run "
            f"`healcore grid demo` in a terminal.")
    try:
        st.page_link(page("Launch"), label="Go to Launch", icon=":material/rocket_launch:")
    except Exception:  # noqa: BLE001 - a page run on its own (tests) has no page registry to link into
        pass


def cell_filters(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """Sidebar filters common to the results pages: models, datasets, pooling, mode, method."""
    out = table
    with st.sidebar:
        for col, label in (("model", "Models"), ("dataset", "Datasets"), ("pooling", "Pooling"),
                           ("mode", "Mode"), ("method", "Corruption method")):
            if col in out and out[col].nunique() > 1:
                options = sorted(out[col].astype(str).unique())
                chosen = st.multiselect(label, options, default=options, key=f"{key}-{col}")
                out = out[out[col].astype(str).isin(chosen)]
    return out


def one_variant(table: pd.DataFrame, key: str, methods: bool = True) -> pd.DataFrame:
    """Charts that place cells by model, dataset and level show one variant (pooling, mode, corruption method)
    at a time; otherwise cells of different variants would land on the same spot."""
    cols = [c for c in (["pooling", "mode"] + (["method", "strength"] if methods else [])) if c in table.columns]
    if table.empty or not cols:
        return table
    labels = table[cols].astype(str).agg(" · ".join, axis=1)
    options = sorted(labels.unique(), key=lambda v: (not v.startswith("cls · full · reinit"), v))
    if len(options) == 1:
        return table
    chosen = st.selectbox("Variant (pooling · mode" + (" · method · strength)" if methods else ")"), options,
                          key=f"{key}-variant")
    picked = table[labels == chosen]
    if methods:  # clean and all-layers references come from the same pooling and mode
        same = (table["pooling"] == picked["pooling"].iloc[0]) & (table["mode"] == picked["mode"].iloc[0])
        refs = table[same & table["side"].isin(["clean"]) & ~table.index.isin(picked.index)]
        picked = pd.concat([picked, refs])
    return picked
