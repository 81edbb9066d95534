"""Compare mode for the results pages (Grid heatmaps, Degradation curves): the "Compare by" choice, A and B, a
second run store or the paper, and the runs behind a selected cell of both sides. Every choice is in the URL
(?by=, ?a=, ?b=, ?store2=, ?paper=, ?correction=, ?cell=), so a copied link reopens the comparison.

The comparison itself is healcore.results.compare's; this module only turns widgets into its arguments and its
one-line errors into st.error, never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from dashboard import common
from healcore import results
from healcore.core.errors import HealcoreError
from healcore.core.paths import confine
from healcore.results import charts, compare_charts, compare_tables
from healcore.results import compare as cmp
from healcore.results.keys import as_text, lr_text
from healcore.results.paper import MODELS as PAPER_MODELS
from healcore.results.paper import matching_model
from healcore.store.runs import RunStore

NOTHING = "nothing (one condition)"
STORE = "another run store"
PAPER = "the paper"


@dataclass
class Comparison:
    a: cmp.Side
    b: cmp.Side
    key: str | None  # the compared key (None for two stores, "paper" against the paper)
    relative: bool  # values as a share of each side's clean cell
    correction: str = "holm"  # how the cells' p-values are corrected together (compare.CORRECTIONS)


def compare_by(table: pd.DataFrame, container=None) -> str | None:
    """The "Compare by" choice: a key that varies in the store, another store, the paper, or nothing."""
    options = [NOTHING, *cmp.comparable_keys(table), STORE, PAPER]
    chosen = common.url_selectbox("Compare by", options, key="by", container=container, help=(
        "Set two conditions side by side: any setting that takes several values in this store (pooling, mode, "
        "schedule, model, method...), another run store, or the paper's published numbers."))
    return None if chosen == NOTHING else chosen


def choose(root: str, runs: pd.DataFrame, table: pd.DataFrame, by: str, whole: bool = False) -> Comparison | None:
    """The two sides of the comparison the widgets ask for (A and B, or the second store, or the paper's model, with
    the correction beside them), or None after a one-line error on the page. `whole`: every experiment of the
    selection (a row each, as `healcore compare` prints it), not one variant (what a chart shows)."""
    c = st.columns(3)
    chosen = _correction(c[2])
    try:
        if by == STORE:
            comparison = _two_stores(root, runs, table)
        elif by == PAPER:
            comparison = _against_paper(root, runs, table, c[0])
        else:
            comparison = _by_key(root, runs, table, by, c, whole)
    except HealcoreError as err:
        st.error(str(err))
        return None
    return replace(comparison, correction=chosen) if comparison else None


def _by_key(root: str, runs: pd.DataFrame, table: pd.DataFrame, by: str, c, whole: bool) -> Comparison:
    """A and B: values of `by` that share an experiment (B offers only A's partners), then one variant in which
    they pair (the chart's), or every experiment (`whole`)."""
    values = cmp.values_of(table, by)
    shown = {"": "(found by its usual name)", "-": "(none)"}  # a blank data option is no empty choice
    a = common.url_selectbox(f"A: {by} =", values, key="a", default=values[0], container=c[0],
                             format_func=lambda v: shown.get(v, v))
    partners = cmp.partners_of(table, by, a)
    b = common.url_selectbox(f"B: {by} =", partners, key="b", default=partners[0], container=c[1],
                             format_func=lambda v: shown.get(v, v))
    pair = table[as_text(table[by]).isin([str(a), str(b)])]
    if not whole:
        labels = common.variant_label(pair, common.variant_keys(pair, exclude={by}))
        paired = {label for label, g in pair.groupby(labels) if cmp.pairings(g, by)}
        pair = common.one_variant(pair[labels.isin(paired)] if paired else pair, exclude={by})
    return Comparison(*cmp.split(pair, runs, by, a, b, root), by, relative=False)


def _two_stores(root: str, runs: pd.DataFrame, table: pd.DataFrame) -> Comparison | None:
    root2 = st.sidebar.text_input("Second run store", common.url_get("store2", ""),
                                  help="A folder of run folders (healcore --store) inside the allowed folders: its "
                                       "runs are matched with this store's on their experiment, not their folder")
    root2 = root2.strip()
    common.url_set("store2", root2 or None)
    if not root2:
        st.info("Choose a second run store in the sidebar to compare this store with.")
        return None
    path = confine(root2, "second run store")
    if not path.is_dir():
        raise_not_a_store(root2)
    if path == RunStore(root).root:
        st.error("The second store is this store; choose another run store")
        return None
    runs2 = common.runs_table(str(path), common.store_version(str(path)))
    if runs2.empty and not RunStore(path).run_ids():
        raise_not_a_store(root2)
    table2 = common.cells_table(str(path), common.store_version(str(path)))
    # one variant of the two stores' cells together (a cell's id is its key: the same experiment in both)
    chosen = set(common.one_variant(pd.concat([table, table2], ignore_index=True))["cell_id"])
    a, b = cmp.store_sides(root, runs, table[table["cell_id"].isin(chosen)], root2, runs2,
                           table2[table2["cell_id"].isin(chosen)])
    return Comparison(a, b, None, relative=False)


def raise_not_a_store(root2: str) -> None:
    raise HealcoreError(f"{root2} is not a run store (no run folders in it); choose a folder written by healcore "
                        f"--store")


def _against_paper(root: str, runs: pd.DataFrame, table: pd.DataFrame, container) -> Comparison:
    variant = common.one_variant(table)
    models = list(dict.fromkeys(variant["model"]))
    default = matching_model(models)
    paper_model = common.url_selectbox("The paper's model", list(PAPER_MODELS), key="paper", default=default,
                                       container=container,
                                       help="Where it is the store's own model, F1 is compared as it is; otherwise "
                                            "each side as a share of its own clean score (levels are percentages of "
                                            "the layers, so the shapes compare)")
    b, relative = cmp.paper_side(variant, paper_model)
    a = cmp.Side(f"store {root}", variant, runs, root)
    return Comparison(a, b, cmp.PAPER_KEY, relative)


def result_of(chosen: Comparison, metric: str = "f1", a: cmp.Side | None = None,
              b: cmp.Side | None = None) -> pd.DataFrame | None:
    """The comparison the widgets chose (sides `a` and `b` where the page changed them, e.g. with healing speed), or
    None after one line on the page: a comparison that cannot be made is a line, never a traceback; one with no
    cell says so."""
    try:
        result = cmp.compare(a or chosen.a, b or chosen.b, chosen.key, metric, chosen.correction, chosen.relative)
    except Exception as err:  # noqa: BLE001 - whatever it is, one line
        st.error(str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    if result.empty:
        st.warning("Neither side has cells under these filters.")
        return None
    return result


def with_speed(side: cmp.Side, share: float) -> cmp.Side:
    """A side with each cell's and each run's healing speed (the paper's side has no per-epoch numbers)."""
    if side.runs is None or side.root is None:
        return replace(side, cells=side.cells.assign(healing_speed=float("nan")))
    ids = tuple(sorted({i for ids in side.cells["run_ids"] for i in ids}))
    epochs = common.epochs_table(side.root, common.store_version(side.root), ids)
    per_cell, per_run = results.healing_speed(side.cells, epochs, share)
    return replace(side, cells=side.cells.assign(healing_speed=per_cell),
                   runs=side.runs.assign(healing_speed=side.runs["run_id"].map(per_run)))


def _correction(container) -> str:
    labels = {v: k for k, v in cmp.CORRECTIONS.items()}
    chosen = common.url_selectbox("Correction for many cells", list(labels), key="correction", container=container, help=(
        "p-values of every cell of the comparison corrected together: Holm controls the chance of any false "
        "positive, Benjamini-Hochberg the share of false positives among the cells marked"))
    return labels[chosen]


def caption(result: pd.DataFrame) -> str:
    """What the page says under a comparison: the caption every view prints (compare_tables.caption), with the
    charts' ★."""
    return compare_tables.caption(result, mark=compare_charts.STAR)


def runs_of_selected(comparison: Comparison, result: pd.DataFrame, key: str) -> None:
    """The runs of both sides behind the selected aligned cell (?cell=), flags first; a run opens Run detail."""
    chosen = result[result["align"] == common.url_get("cell")]
    if chosen.empty:
        return
    r = chosen.iloc[0]
    where = f"{r['dataset']} · {common.setting_label(r['side'], float(r['level']))}"
    st.markdown(f"**{where}**: A {r['a']:.2f} (lr {lr_text(r['a_lr'])}, n = {r['a_n']}) vs B {r['b']:.2f} "
                f"(lr {lr_text(r['b_lr'])}, n = {r['b_n']}); A − B {r['delta']:+.2f}; {r['test']}"
                .replace("nan", "–") + (f"; {r['status']}" if r["status"] else ""))
    curves = []
    for side, ids, label in ((comparison.a, r["a_run_ids"], "A"), (comparison.b, r["b_run_ids"], "B")):
        if side.runs is None:
            st.caption(f"{label}: {side.name}: published numbers, no runs.")
            continue
        common.runs_behind(side.runs, ids, key=f"{key}-{label}", title=f"{label}: {side.name}",
                           store=side.root)
        epochs = common.epochs_table(side.root, common.store_version(side.root), tuple(ids))
        if len(epochs):
            curves.append(epochs.assign(run=[f"{label}: {i}" for i in epochs["run_id"]]))
    if curves:  # both sides' runs overlaid, whatever store each lives in
        st.altair_chart(charts.run_curves(pd.concat(curves, ignore_index=True)), width="stretch")
