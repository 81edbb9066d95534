"""The paper's published numbers as cells, so that "the paper" is a side any run store can be compared with.

Shijie Han, Zhenyu Zhang, Andrei Arsene Simion (2024). Healing Powers of BERT: How Task-Specific Fine-Tuning
Recovers Corrupted Language Models. arXiv:2406.14459. Every weighted-F1 figure of its Tables 1, 3, 4 and 5 is in
healcore/reference/paper_tables.csv (its README describes the columns). Torch-free.

The paper ran one seed per cell (no spread, no test). A paper cell at or below its task's majority-class F1 plus
flags.COLLAPSE_MARGIN predicted one class (the paper's own text calls 16.98 on Emotion such an outlier): as in a
store, it did not learn, and stays a measurement (a model that did not heal), flagged.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from healcore.results.flags import COLLAPSE_MARGIN
from healcore.results.keys import cell_id

CSV = Path(__file__).resolve().parents[1] / "reference" / "paper_tables.csv"
CITATION = ("Han, Zhang, Simion (2024), Healing Powers of BERT: How Task-Specific Fine-Tuning Recovers Corrupted "
            "Language Models, arXiv:2406.14459")
MODELS = ("bert-base-uncased", "bert-large-uncased", "distilbert-base-uncased")
LAYERS = {"bert-base-uncased": 12, "bert-large-uncased": 24, "distilbert-base-uncased": 6}
# Majority-class weighted F1 (2p^2 / (1 + p) for the largest class's share p) of each task's test split as the
# paper drew it: a stratified re-split of train and test pooled (shares of the pooled data in ../shared/data), and
# the labelled dev set of the GLUE pairs. Twitter Financial News Topic is not in that data: no flag there.
MAJORITY_F1 = {"sst2": 39.79, "imdb": 33.33, "ag_news": 10.15, "emotion": 16.94, "dbpedia_14": 1.06,
               "mrpc": 53.11, "rte": 36.38}
NAME = "the paper"


@lru_cache(maxsize=1)
def paper_cells() -> pd.DataFrame:
    """One row per published figure, in the shape of results.cells: model, dataset, side, level, pooling, mode,
    f1 and the counts a cell carries (one seed, no spread), whether it collapsed, and its cell_id."""
    raw = pd.read_csv(CSV)
    rows = []
    for r in raw.itertuples():
        collapsed = r.dataset in MAJORITY_F1 and r.f1_weighted <= MAJORITY_F1[r.dataset] + COLLAPSE_MARGIN
        why = [f"collapsed: F1 {r.f1_weighted:.2f} <= majority-class F1 {MAJORITY_F1.get(r.dataset, 0):.2f} "
               f"(one class predicted)"] if collapsed else []
        L = LAYERS[r.model]
        k = int(round(r.level_pct * L / 100))
        rows.append({"model": r.model, "dataset": r.dataset, "side": r.side, "n_layers": k, "level": r.level_pct / 100,
                     "pooling": r.pooling, "mode": "linear_probe" if r.mode == "probe" else r.mode,
                     "method": "reinit", "table": r.table, "f1": float(r.f1_weighted), "f1_std": 0.0, "n_seeds": 1,
                     "seeds": [], "per_seed": {}, "lr": float("nan"), "run_ids": [], "all_run_ids": [],
                     "n_runs": 1, "n_failures": 0, "failures": [], "value_failed": False, "value_failures": [],
                     "did_not_learn": collapsed, "value_flags": [f"did not learn: {w}" for w in why],
                     "value_flagged": collapsed, "diverged_at_lr": 0, "n_running": 0, "n_queued": 0,
                     "surprises": [], "source": NAME})
    table = pd.DataFrame(rows)
    table.insert(0, "cell_id", [cell_id(r) for r in table.to_dict("records")])
    return table


def matching_model(models) -> str:
    """The paper's model to set beside a store's: the store's own where the paper ran it, else BERT-base."""
    for model in models:
        if model in MODELS:
            return model
    return MODELS[0]
