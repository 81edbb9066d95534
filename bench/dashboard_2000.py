"""Every dashboard page with a store of 2,000 runs: render times after the first load, the runs table's filtering,
and the compare views. A benchmark script, not a test.

Run: python bench/dashboard_2000.py [--runs 2000]

Builds a synthetic store in healcore's exact format (healcore/synthetic.py: BERT-base-, BERT-large- and DistilBERT-
shaped grids on six datasets, 3 learning rates, seeds until N runs, with failures, surprises and a grid in
flight; each model in both poolings, [CLS] and mean, half its runs each), then renders each page with Streamlit's
AppTest (the server's code path): once cold, then three warm re-renders (what a user sees when coming back or
changing a widget), and the compare views the same way (heatmaps and curves by pooling, the heatmaps' healing
speed by pooling, the heatmaps against the paper). Targets: every page and compare view <= 2 s warm; the runs
table re-renders with a new filter in <= 0.5 s.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEALCORE_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODELS = {"bert-base-uncased": 12, "bert-large-uncased": 24, "distilbert-base-uncased": 6}
DATASETS = ("sst2", "imdb", "ag_news", "emotion", "dbpedia_14", "twitter_financial_news_topic")


def build_store(root: Path, n: int):
    from healcore.results import synthetic as syn

    per_variant = -(-n // (2 * len(MODELS)))
    store = None
    for model, L in MODELS.items():
        levels = (0, L // 4, L // 2, 3 * L // 4, L) if L >= 12 else (0, L // 2, L)
        for pooling in ("cls", "mean"):
            store = syn.build(root, models=((model, L),), datasets=DATASETS, levels=levels, lrs=(1e-5, 2e-5, 5e-5),
                              seeds=tuple(range(12)), epochs=10, limit=per_variant, base={"pooling": pooling})
    ids = store.run_ids()
    for i, run_id in enumerate(ids[::97]):  # a few of each kind of trouble
        (syn.fail, syn.collapse, syn.flatten, syn.stray)[i % 4](store, run_id)
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    from streamlit.testing.v1 import AppTest

    from dashboard.common import PAGES

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = build_store(Path(tmp) / "runs", args.runs)
        print(f"built a store of {len(store.run_ids())} runs in {time.perf_counter() - t:.1f}s; "
              f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
        os.environ["HEALCORE_RUNS"] = str(store.root)
        worst = {}
        views = [(file, title, {}) for file, title, *_ in PAGES] + [
            ("pages/3_Grid_heatmaps.py", "compare: heatmaps by pooling", {"by": "pooling"}),
            ("pages/3_Grid_heatmaps.py", "compare: healing speed",
             {"by": "pooling", "metric": "Healing speed (epochs to reach a share of clean)"}),
            ("pages/3_Grid_heatmaps.py", "compare: against the paper", {"by": "the paper"}),
            ("pages/4_Degradation_curves.py", "compare: curves by pooling", {"by": "pooling"})]
        for file, title, query in views:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
            t = time.perf_counter()
            at.run()
            if file != "app.py":
                at.switch_page(file)
                for key, value in query.items():
                    at.query_params[key] = value
                at.run()
            cold = time.perf_counter() - t
            assert not at.exception, (title, at.exception)
            assert not query or not [e for e in at.error if "convergence" not in e.value], (title, at.error)
            warm = []
            for _ in range(3):
                t = time.perf_counter()
                at.run()
                warm.append(time.perf_counter() - t)
            worst[title] = max(warm)
            print(f"{title:30s} first {cold:6.2f}s  warm median {statistics.median(warm):5.2f}s  worst {max(warm):5.2f}s",
                  flush=True)
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page("pages/2_Runs.py")
        at.run()
        filters = []
        for query in ("bottom", "top", "clean", ""):
            t = time.perf_counter()
            at.sidebar.text_input(key="runs-q").set_value(query).run()
            filters.append(time.perf_counter() - t)
        t = time.perf_counter()
        at.multiselect(key="urls-group").set_value(["model", "side"]).run()
        grouping = time.perf_counter() - t
        print(f"runs table: new filter {statistics.median(filters):.2f}s median, {max(filters):.2f}s worst; "
              f"group by model and side {grouping:.2f}s")
        pages = {k: v for k, v in worst.items() if not k.startswith("compare:")}
        compares = {k: v for k, v in worst.items() if k.startswith("compare:")}
        print(f"\nRATIOS (target / worst; >= 1 meets it)\n  pages, 2 s / worst warm render: "
              f"{2.0 / max(pages.values()):.2f}x ({max(pages, key=pages.get)})\n  compare views, 2 s / worst warm "
              f"render: {2.0 / max(compares.values()):.2f}x ({max(compares, key=compares.get)})\n  runs table, 0.5 s "
              f"/ worst filter: {0.5 / max(filters):.2f}x")


if __name__ == "__main__":
    main()
