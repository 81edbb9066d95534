"""Grid heatmaps page with a store of 2,000 runs: render time after the first load.

Run: python bench/heatmap_2000.py [--runs 2000]

Builds a store of N run folders in the exact format healcore writes (config, status, summary, metrics,
written by the same store code; the numbers are synthetic), then renders the Grid heatmaps page with
Streamlit's AppTest: a first (cold) render that reads the store, then warm re-renders, which is what a
user sees when switching metrics or coming back to the page. Prints the seconds of each; target < 2 s warm.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_store(root: Path, n: int) -> None:
    import numpy as np

    from healcore.config import RunConfig
    from healcore.store import atomic_write_json

    rng = np.random.default_rng(0)
    models = [("bert-base-uncased", 12), ("bert-large-uncased", 24), ("distilbert-base-uncased", 6)]
    datasets = ["sst2", "imdb", "ag_news", "emotion", "dbpedia_14", "twitter_financial_news_topic"]
    made = 0
    seed = 0
    while made < n:
        for model, L in models:
            for ds in datasets:
                for k, side in [(0, "bottom")] + [(L * p // 4, s) for p in (1, 2, 3) for s in ("bottom", "top")] + [(L, "bottom")]:
                    for lr in (1e-5, 2e-5, 5e-5):
                        if made >= n:
                            return
                        cfg = RunConfig(model=model, dataset=ds, corrupt="none" if k == 0 else f"{side}:{k}", lr=lr,
                                        seed=seed, epochs=10)
                        d = root / cfg.run_id
                        d.mkdir(parents=True, exist_ok=True)
                        f1 = float(np.clip(90 - 40 * k / L * (1.3 if side == "bottom" else 0.8) + rng.normal(0, 2), 5, 99))
                        layers = list(range(1, k + 1)) if side == "bottom" else list(range(L - k + 1, L + 1))
                        atomic_write_json(d / "config.json", cfg.to_dict())
                        atomic_write_json(d / "status.json", {"state": "completed", "pid": 1, "host": "x",
                                                              "heartbeat": 0, "started": 0, "ended": 1})
                        m = {"accuracy": f1, "f1_weighted": f1, "f1_macro": f1 - 1}
                        atomic_write_json(d / "summary.json", {
                            "corruption": {"num_layers": L, "layers": layers}, "best": {"validation": m, "test": m},
                            "best_on_test": f1 + 0.5, "best_epoch": 5, "probe": {"f1_weighted": f1 / 2},
                            "healing": f1 / 2, "majority_f1": 20.0, "losses": [1.0, 0.5, 0.3],
                            "timing": {"train_s": 100, "eval_s": 10, "tokens_per_s": 1e5, "tokens_per_epoch": 1e6}})
                        (d / "metrics.jsonl").write_text("")
                        made += 1
        seed += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        t = time.perf_counter()
        build_store(store, args.runs)
        print(f"built a store of {args.runs} runs in {time.perf_counter() - t:.1f}s")
        os.environ["HEALCORE_RUNS"] = str(store)
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        t = time.perf_counter()
        at.run()  # the home page reads the whole store once (cached from then on)
        home = time.perf_counter() - t
        at.switch_page("pages/2_Grid_heatmaps.py")
        t = time.perf_counter()
        at.run()
        assert not at.exception, at.exception
        cold = time.perf_counter() - t
        warm = []
        for metric in ("Macro F1", "Weighted F1", "Healing (F1 after - probe)"):
            at.selectbox[0].set_value(metric)
            t = time.perf_counter()
            at.run()
            assert not at.exception
            warm.append(time.perf_counter() - t)
        print(f"first load, home page (reads {args.runs} run folders, includes imports): {home:.2f}s")
        print(f"heatmaps page, first render (builds the cells table): {cold:.2f}s")
        print(f"warm renders: {', '.join(f'{w:.2f}s' for w in warm)}; worst {max(warm):.2f}s (target < 2 s)")


if __name__ == "__main__":
    main()
