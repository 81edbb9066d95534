"""What the pages share: the page registry, the run store choice, cached loaders, widgets whose state lives in
the URL, the flag banner, and the table of the runs behind a chart mark.

The dashboard reads the store through healcore (results, analysis, progress, launch); it holds no engine logic
and never imports torch.
"""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from healcore import results
from healcore.core.config import CORRUPTION_FIELDS
from healcore.core.errors import HealcoreError
from healcore.core.layers import setting_label  # noqa: F401 - pages use common.setting_label
from healcore.core.paths import confine
from healcore.results import flags
from healcore.results.keys import CELL_KEYS, PLACEMENT_KEYS, as_text, lr_text, setting_words
from healcore.store.runs import RunStore, fingerprint

# (file, title, icon, url path, section): the navigation, in order
PAGES = [  # pages/ is found by Streamlit; this list orders and groups them
    ("app.py", "Home", ":material/healing:", "", "healcore"),
    ("pages/1_Launch.py", "Launch", ":material/rocket_launch:", "Launch", "Run"),
    ("pages/2_Runs.py", "Runs", ":material/table_rows:", "Runs", "Run"),
    ("pages/3_Grid_heatmaps.py", "Grid heatmaps", ":material/grid_on:", "Grid_heatmaps", "Results"),
    ("pages/4_Degradation_curves.py", "Degradation curves", ":material/trending_down:", "Degradation_curves",
     "Results"),
    ("pages/5_Healing_over_epochs.py", "Healing over epochs", ":material/show_chart:", "Healing_over_epochs",
     "Results"),
    ("pages/6_Where_healing_happens.py", "Where healing happens", ":material/layers:", "Where_healing_happens",
     "Results"),
    ("pages/7_Failures_and_surprises.py", "Failures and surprises", ":material/report:", "Failures_and_surprises",
     "Results"),
    ("pages/8_Embeddings.py", "Embeddings", ":material/scatter_plot:", "Embeddings", "Inspect"),
    ("pages/9_Run_detail.py", "Run detail", ":material/description:", "Run_detail", "Inspect"),
    ("pages/10_Export.py", "Export", ":material/download:", "Export", "Inspect"),
]
PAGE_FILES = {title: file for file, title, *_ in PAGES}


def page(title: str) -> str:
    """The file of a page by its title, for st.page_link and st.switch_page."""
    return PAGE_FILES[title]


def set_up_page(title: str) -> None:
    """Every page: the wide layout, the navigation, and its title.

    The pages live in pages/, which Streamlit discovers on its own; its generated navigation is hidden
    (.streamlit/config.toml) because it names the home page after the file (app) and has no sections."""
    st.set_page_config(page_title=f"{title} · healcore" if title != "healcore" else "healcore",
                       page_icon=":material/healing:", layout="wide")
    navigation()
    st.title(title)


def navigation() -> None:
    with st.sidebar:
        section = None
        for file, title, icon, _, group in PAGES:
            if group != section:
                section = group
                st.caption(group)
            try:
                st.page_link(file, label=title, icon=icon)
            except Exception:  # noqa: BLE001 - a page run on its own (tests) has no page registry to link into
                return
        st.divider()


# ------------------------------------------------------------------------------------------ URL state
def url_get(key: str, default: str | None = None) -> str | None:
    return st.query_params.get(key, default)


def url_set(key: str, value) -> None:
    """Keep a view's state in the URL: lists as repeated keys; None or [] removes the key."""
    if value is None or (isinstance(value, (list, tuple)) and not value) or value == "":
        if key in st.query_params:
            del st.query_params[key]
        return
    st.query_params[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)


def url_multiselect(label: str, options: list, key: str, default: list | None = None, container=None,
                    all_means_none: bool = True, **kwargs) -> list:
    """A multiselect whose choice is kept in the URL (?key=a&key=b), so a copied URL reopens the same view.
    With all_means_none, choosing every option leaves the URL clean (and new options are then included)."""
    container = container or st
    options = list(options)
    by_text = {str(o): o for o in options}
    state_key = f"urls-{key}"  # not url-{key}: a page may keep the same URL key in a select box (one value)
    if state_key not in st.session_state or not isinstance(st.session_state[state_key], list):
        wanted = [by_text[v] for v in st.query_params.get_all(key) if v in by_text]
        st.session_state[state_key] = wanted or (default if default is not None else options)
    st.session_state[state_key] = [v for v in st.session_state[state_key] if v in options]
    chosen = container.multiselect(label, options, key=state_key, **kwargs)
    url_set(key, None if all_means_none and set(map(str, chosen)) == set(by_text) else chosen)
    return chosen


def url_selectbox(label: str, options: list, key: str, default=None, container=None, **kwargs):
    """A select box whose choice is kept in the URL (?key=value)."""
    container = container or st
    options = list(options)
    if not options:
        return None
    by_text = {str(o): o for o in options}
    state_key = f"url-{key}"
    if state_key not in st.session_state or st.session_state[state_key] not in options:
        wanted = url_get(key)
        st.session_state[state_key] = by_text.get(wanted, default if default in options else options[0])
    chosen = container.selectbox(label, options, key=state_key, **kwargs)
    url_set(key, chosen)
    return chosen


# ------------------------------------------------------------------------------------------ store
def store_root() -> str:
    """The run store: ?store= in the URL, else the sidebar's earlier choice, else $HEALCORE_RUNS, else ./runs."""
    if "store_root" not in st.session_state or url_get("store") not in (None, st.session_state["store_root"]):
        # a link (or a compared run of a second store) names its store: the URL wins
        st.session_state["store_root"] = url_get("store") or os.environ.get("HEALCORE_RUNS", "runs")
    value = st.sidebar.text_input("Run store", st.session_state["store_root"],
                                  help="Folder with one sub-folder per run (healcore --store); relative paths "
                                       "are relative to where streamlit was started.")
    st.session_state["store_root"] = value.strip() or "runs"
    default = os.environ.get("HEALCORE_RUNS", "runs")
    url_set("store", st.session_state["store_root"] if st.session_state["store_root"] != default else None)
    return st.session_state["store_root"]


def store_version(root: str) -> tuple:
    """Changes whenever a run folder's status or summary, or a grid record, changes: the cache key of the tables."""
    return fingerprint(root)


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
        if not RunStore(root).looks_like_a_store():
            raise HealcoreError(f"{root} is not a run store: it holds no run folders; choose the folder given to "
                                f"healcore --store (or a new, empty one)")
    except HealcoreError as err:  # outside the allowed folders, a file, not a store: say so, never a traceback
        st.error(str(err))
        st.stop()
    return root, runs_table(root, store_version(root))


def with_speed(root: str, table: pd.DataFrame, share: float) -> pd.DataFrame:
    """Cells with their healing speed (results.healing_speed), from the stored per-epoch metrics of their runs."""
    ids = tuple(sorted({i for ids in table["run_ids"] for i in ids}))
    per_cell, _ = results.healing_speed(table, epochs_table(root, store_version(root), ids), share)
    return table.assign(healing_speed=per_cell)


def load_cells(root: str) -> pd.DataFrame:
    return cells_table(root, store_version(root))


def load_nonempty() -> tuple[str, pd.DataFrame]:
    """load(), but a store with no runs at all shows the next step and stops the page."""
    root, runs = load()
    if runs.empty:
        empty_store_notice(root)
        st.stop()
    return root, runs


def cells_page(title: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The opening of a page of cells: its title, the store (stopping on an empty one), the flag banner and the
    sidebar's cell filters. Returns the store, its runs and the filtered cells."""
    set_up_page(title)
    root, runs = load_nonempty()
    table = load_cells(root)
    flag_banner(runs, table)
    return root, runs, cell_filters(table)


def empty_store_notice(root: str) -> None:
    st.info(f"No runs in `{root}` yet. Start with the **demo** grid on the Launch page "
            f"(minilm-l6 on a slice of SST-2; Launch estimates its time on this machine before you start), or run "
            f"`healcore grid demo` in a terminal.")
    try:
        st.page_link(page("Launch"), label="Go to Launch", icon=":material/rocket_launch:")
    except Exception:  # noqa: BLE001 - a page run on its own (tests) has no page registry to link into
        pass


def nothing_scored_yet(runs: pd.DataFrame) -> None:
    """Runs exist but none has finished: say what is under way instead of "no runs"."""
    counts = runs["state"].value_counts().to_dict()
    st.info("No run has finished yet: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + ". Cells fill in as runs complete; progress is on the Launch page.")


# ------------------------------------------------------------------------------------------ filters
def cell_filters(table: pd.DataFrame) -> pd.DataFrame:
    """Sidebar filters common to the results pages (kept in the URL): models, datasets, pooling, mode, method."""
    out = table
    with st.sidebar:
        for col, label in (("model", "Models"), ("dataset", "Datasets"), ("pooling", "Pooling"),
                           ("mode", "Mode"), ("method", "Corruption method")):
            if col in out and out[col].nunique() > 1:
                options = sorted(as_text(out[col]).unique())
                chosen = url_multiselect(label, options, key=col)
                out = out[as_text(out[col]).isin(chosen)]
    return out


def variant_keys(table: pd.DataFrame, exclude=()) -> list[str]:
    """The keys of a cell, beyond where it sits (model, dataset, side, level), that take several values for one
    model and dataset (a setting that differs only between datasets, such as their epochs, is no variant)."""
    placed = {"model", "dataset", *PLACEMENT_KEYS}
    keys = [k for k in CELL_KEYS if k not in placed and k not in exclude and k in table]
    if table.empty:
        return []
    groups = table.groupby([as_text(table["model"]), as_text(table["dataset"])], sort=False)
    return [k for k in keys if any(as_text(g[k]).nunique() > 1 for _, g in groups)]


def variant_label(table: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Each cell's variant in words ("mean pooling · constant schedule · all training rows"); blank data options
    (the usual names) say nothing."""
    if not keys:
        return pd.Series("", index=table.index, dtype=object)
    words = [" · ".join(w for w in (setting_words(k, v) for k, v in r.items()) if w) or "defaults"
             for r in table[keys].to_dict("records")]
    return pd.Series(words, index=table.index, dtype=object)


def one_variant(table: pd.DataFrame, exclude=(), key: str = "variant") -> pd.DataFrame:
    """Charts that place cells by model, dataset and level show one variant (every other key of a cell that
    varies: pooling, mode, schedule, epochs, batch size, method...) at a time; otherwise cells of different variants
    would land on the same spot. `exclude`: the keys a view sets side by side; `key`: the URL key of the choice."""
    keys = variant_keys(table, exclude)
    if table.empty or not keys:
        return table
    labels = variant_label(table, keys)
    options = sorted(labels.unique(), key=lambda v: ("cls pooling" not in v and "pooling" in keys,
                                                     "full fine-tuning" not in v and "mode" in keys, v))
    if len(options) == 1:
        return table
    # opens on the variant with the most scored cells (a second grid does not hide the first), else the URL's
    scored = labels[table["f1"].notna()] if "f1" in table else labels
    fullest = scored.value_counts().index[0] if len(scored) else options[0]
    chosen = url_selectbox(f"Variant ({', '.join(k.replace('_', ' ') for k in keys)})", options, key=key,
                           default=fullest)
    picked = table[labels == chosen]
    damage = [k for k in keys if k in CORRUPTION_FIELDS]
    if damage:  # clean cells are the reference of every damage: taken from the same experiment
        rest = [k for k in keys if k not in damage]
        same = variant_label(table, rest) == variant_label(picked.iloc[:1], rest).iloc[0]
        refs = table[same & (table["side"] == "clean") & ~table.index.isin(picked.index)]
        picked = pd.concat([picked, refs])
    return picked


# ------------------------------------------------------------------------------------------ flags
def flag_banner(runs: pd.DataFrame, table: pd.DataFrame) -> None:
    """The store's flag counts, the same numbers on every page, with the way to the details."""
    counts = flags.summary(runs, table)
    if not any(counts.values()):
        return
    text = flags.summary_line(counts)
    c1, c2 = st.columns([4, 1])
    (c1.error if counts["runs with convergence failures"] else c1.warning)(text, icon=":material/report:")
    try:
        c2.page_link(page("Failures and surprises"), label="See every flag", icon=":material/arrow_forward:")
    except Exception:  # noqa: BLE001 - a page run on its own (tests)
        pass


def selected_cell(event, key: str, field: str = "cell_id") -> None:
    """A click on a chart's cell puts it in the URL (?cell=); a click elsewhere clears it. An unchanged selection
    (a rerun for another reason, or a URL opened with ?cell=) leaves the URL as it is."""
    picked = [p.get(field) for p in (event.selection.get("cell") or [])] if event is not None else []
    last = st.session_state.get(f"{key}-last")
    if picked != last:
        st.session_state[f"{key}-last"] = picked
        if last is not None or picked:
            url_set("cell", picked[0] if picked else None)


def open_run_detail(run_id: str, store: str | None = None) -> None:
    """Run detail of a run: of this store, or of `store` (a compared second store)."""
    query = {"run": run_id, **({"store": store} if store else {})}
    try:
        st.switch_page(page("Run detail"), query_params=query)
    except st.errors.StreamlitAPIException:  # a page run on its own (tests): keep the choice in the URL
        for k, v in query.items():
            url_set(k, v)


RUN_COLUMNS = ["run_id", "state", "setting", "lr", "seed", "test_f1_weighted", "probe_f1", "best_epoch", "failures",
               "flags"]


def runs_behind(runs: pd.DataFrame, run_ids: list[str], key: str, title: str, store: str | None = None) -> None:
    """The runs behind a chart mark, flags first; selecting one opens its Run detail (in `store`, when given)."""
    sub = runs[runs["run_id"].isin(run_ids)].copy()
    if sub.empty:
        return
    sub["setting"] = [setting_label(s, l) for s, l in zip(sub["side"], sub["level"])]
    sub["failures"] = sub["failures"].map("; ".join)
    sub["flags"] = sub["flags"].map("; ".join) if "flags" in sub else ""
    sub = sub.sort_values(["failures", "flags", "lr", "seed"], ascending=[False, False, True, True])
    sub["lr"] = sub["lr"].map(lr_text)
    st.markdown(f"**{title}** · select a run to open it")
    event = st.dataframe(sub[RUN_COLUMNS], hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key=key, column_config=RUN_COLUMN_CONFIG)
    rows = event.selection.rows if event is not None else []
    if rows:
        open_run_detail(sub.iloc[rows[0]]["run_id"], store)


RUN_COLUMN_CONFIG = {
    "run_id": st.column_config.TextColumn("run", width="medium"),
    "test_f1_weighted": st.column_config.NumberColumn("test F1", format="%.2f", width="small"),
    "probe_f1": st.column_config.NumberColumn("probe F1", format="%.2f", width="small"),
    "healing": st.column_config.NumberColumn("healing", format="%.2f", width="small"),
    "lr": st.column_config.TextColumn("lr", width="small"),  # results.keys.lr_text: 1e-2, 5e-5, as every view writes it
    "seed": st.column_config.NumberColumn("seed", format="%d", width="small"),
    "best_epoch": st.column_config.NumberColumn("best epoch", format="%d"),
    "failures": st.column_config.TextColumn("convergence failures", width="medium"),
    "flags": st.column_config.TextColumn("flags (kept)", width="large"),
}
