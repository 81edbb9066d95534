"""Runs: every run of the store in one table. Filter by any config key, search ids, sort, choose columns, group by
any keys with mean ± std; select two or more runs to see their config differences side by side and their curves
overlaid. Every choice is kept in the URL."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore.core.config import CONFIG_FIELDS
from healcore.results import charts
from healcore.results.keys import as_text, lr_text

METRICS = ["test_f1_weighted", "test_f1_macro", "test_accuracy", "validation_f1_weighted", "best_on_test",
           "probe_f1", "healing", "tokens_per_s", "train_s"]
# the scores first after the run, then its lr and seed, then the (wide) failure and flag columns: at 1280 px the
# table shows about 800 px, up to the seed. A model or dataset column comes before the setting where the store
# holds several, at the end where it holds one (default_columns).
DEFAULT_COLUMNS = ["run_id", "state", "model", "dataset", "setting", "test_f1_weighted", "probe_f1", "healing", "lr",
                   "seed", "failures", "flags", "lr_schedule", "epochs", "best_epoch"]


def default_columns(table: pd.DataFrame) -> list[str]:
    """DEFAULT_COLUMNS present in the table, with a model or dataset column that holds one value moved to the end."""
    single = [k for k in ("model", "dataset") if k in table and as_text(table[k]).nunique() <= 1]
    return [k for k in DEFAULT_COLUMNS if k in table and k not in single] + single
MAX_COMPARED = 8


def tidy(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table as shown: a setting in words, failures as text, the columns a reader filters on."""
    out = runs.drop(columns=[c for c in ("progress", "damaged", "options_given", "options_recorded") if c in runs])
    out["setting"] = [common.setting_label(s, l) for s, l in zip(runs["side"], runs["level"])]
    out["failures"] = runs["failures"].map("; ".join)
    out["flags"] = runs["flags"].map("; ".join) if "flags" in runs else ""
    return out


def filter_keys(runs: pd.DataFrame) -> list[str]:
    """Columns worth filtering on: config keys and placement that take more than one value."""
    keys = ["state", "setting", "side"] + [k for k in CONFIG_FIELDS if k in runs]
    return [k for k in dict.fromkeys(keys) if k in runs and as_text(runs[k]).nunique() > 1]


def apply_filters(runs: pd.DataFrame, query: str, only_failed: bool, chosen: dict[str, list[str]]) -> pd.DataFrame:
    """Pure: the rows matching an id substring, the failure toggle and each key's chosen values."""
    mask = pd.Series(True, index=runs.index)
    if query:
        mask &= runs["run_id"].str.contains(query, case=False, regex=False)
    if only_failed:
        mask &= (runs["failures"] != "") | (runs["flags"] != "" if "flags" in runs else False)
    for key, values in chosen.items():
        mask &= as_text(runs[key]).isin(values)
    return runs[mask]


def grouped(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """One row per group: how many runs, mean ± std (and min, max) of the metric, runs with failures."""
    g = runs.groupby([as_text(runs[k]) for k in keys], sort=True, dropna=False)
    out = g.agg(runs=("run_id", "size"), mean=(metric, "mean"), std=(metric, "std"), min=(metric, "min"),
                max=(metric, "max"), failures=("failures", lambda f: int((f != "").sum()))).reset_index()
    out["mean ± std"] = [f"{m:.2f} ± {s:.2f}" if pd.notna(s) else (f"{m:.2f}" if pd.notna(m) else "–")
                         for m, s in zip(out["mean"], out["std"])]
    return out


def config_diff(runs: pd.DataFrame) -> pd.DataFrame:
    """Config keys that differ between the runs, one column per run (keys all share are left out)."""
    keys = [k for k in CONFIG_FIELDS if k in runs and as_text(runs[k]).nunique() > 1]
    table = runs.set_index("run_id")[keys].apply(as_text).T
    table.index.name = "config key"
    return table


def compare(root: str, picked: pd.DataFrame) -> None:
    st.subheader(f"Comparing {len(picked)} runs")
    diff = config_diff(picked)
    if diff.empty:
        st.caption("Their configs are identical.")
    else:
        st.dataframe(diff, width="stretch")
    epochs = common.epochs_table(root, common.store_version(root), tuple(picked["run_id"]))
    if len(epochs):
        epochs = epochs.assign(run=epochs["run_id"])
        # one above the other, full width: the legend of run ids needs the room
        st.altair_chart(charts.run_curves(epochs, title="Weighted F1 per epoch"), width="stretch")
        st.altair_chart(charts.loss_curve(epochs), width="stretch")


def main() -> None:
    common.set_up_page("Runs")
    root, runs = common.load_nonempty()
    table = tidy(runs)
    common.flag_banner(runs, common.load_cells(root))
    with st.sidebar:
        st.header("Filter")
        query = st.text_input("Run id contains", common.url_get("q", ""), key="runs-q").strip()
        common.url_set("q", query)
        only_failed = st.toggle("Only failed or flagged runs", common.url_get("failed") == "1",
                                key="runs-failed")
        common.url_set("failed", "1" if only_failed else None)
        keys = filter_keys(table)
        by = common.url_multiselect("Filter by", keys, key="filter_by", default=[], all_means_none=False)
        chosen = {k: list(map(str, common.url_multiselect(k, sorted(as_text(table[k]).unique()), key=f"f_{k}")))
                  for k in by}
    shown = apply_filters(table, query, only_failed, chosen)
    c = st.columns([3, 2, 1.5, 2])
    columns = common.url_multiselect("Columns", list(table.columns), key="cols",
                                     default=default_columns(table), all_means_none=False,
                                     container=c[0])
    sort = common.url_selectbox("Sort by", ["run_id"] + [k for k in table.columns if k != "run_id"], key="sort",
                                container=c[1])
    descending = c[2].toggle("Descending", common.url_get("desc") == "1", key="runs-desc")
    common.url_set("desc", "1" if descending else None)
    group = common.url_multiselect("Group by (mean ± std)", filter_keys(table), key="group", default=[],
                                   all_means_none=False, container=c[3])
    shown = shown.sort_values(sort, ascending=not descending, kind="stable")
    st.caption(f"{len(shown)} of {len(table)} runs")
    if group:
        metric = common.url_selectbox("Metric", [m for m in METRICS if m in shown], key="metric")
        st.dataframe(grouped(shown, group, metric), hide_index=True, width="stretch",
                     column_config={k: st.column_config.NumberColumn(format="%.2f") for k in
                                    ("mean", "std", "min", "max")})
        return
    display = shown[columns or ["run_id"]]
    if "lr" in display:  # sorted as numbers above, written as every view writes it
        display = display.assign(lr=display["lr"].map(lr_text))
    event = st.dataframe(display, hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="multi-row", key="runs-table", column_config=common.RUN_COLUMN_CONFIG)
    rows = event.selection.rows if event is not None else []
    now = list(shown.iloc[rows[:MAX_COMPARED]]["run_id"]) if rows else []
    last = st.session_state.get("runs-sel-last")
    if now != last:  # a new selection in the table goes to the URL; a URL opened with ?sel= is kept
        st.session_state["runs-sel-last"] = now
        if last is not None or now:
            common.url_set("sel", now)
    selected = [i for i in st.query_params.get_all("sel") if i in set(table["run_id"])][:MAX_COMPARED]
    picked = table.set_index("run_id").loc[selected].reset_index() if selected else table.iloc[0:0]
    if len(picked) == 1:
        st.caption("Select another run to compare; or open this one.")
        if st.button(f"Open {picked.iloc[0]['run_id']} in Run detail", icon=":material/open_in_new:"):
            common.open_run_detail(picked.iloc[0]["run_id"])
    elif len(picked) >= 2:
        compare(root, picked)
    else:
        st.caption("Select rows to compare their configs and curves (up to 8); select one to open it.")


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
