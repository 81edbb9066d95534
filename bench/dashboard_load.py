"""Dashboard responsiveness while a grid of 50 tiny runs executes.

Run: python bench/dashboard_load.py [--runs 50] [--workers 2]

Saves a tiny random BERT (4 layers, hidden 32) to a temp folder, renders every page once on an idle
machine (baseline), then starts a 50-run grid on it with `healcore grid` in the background and keeps
rendering every page (Streamlit AppTest, the same code path as the server) until the grid finishes.
Prints per-page render times: idle, and median/worst under load; every render must succeed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HEALCORE_DATA", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PAGES = ["1_Launch", "2_Runs", "3_Grid_heatmaps", "4_Degradation_curves", "5_Healing_over_epochs",
         "6_Where_healing_happens", "7_Failures_and_surprises", "8_Embeddings", "9_Run_detail", "10_Export"]


def tiny_model(folder: Path) -> str:
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from healcore.engine.models import resolve_model_path

    torch.manual_seed(0)
    AutoModel.from_config(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")).save_pretrained(folder)
    return str(folder)


def render_all(app_test_factory) -> dict:
    times = {}
    at = app_test_factory()
    at.run()
    for page in PAGES:
        at.switch_page(f"pages/{page}.py")
        t = time.perf_counter()
        at.run()
        times[page] = time.perf_counter() - t
        if at.exception:
            raise SystemExit(f"{page} failed to render: {at.exception}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "tiny")
        store = tmp / "runs"
        os.environ["HEALCORE_RUNS"] = str(store)
        os.environ["HEALCORE_ALLOWED_ROOTS"] = str(tmp)
        factory = lambda: AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)  # noqa: E731
        seeds = list(range(max(1, args.runs // 5)))  # 5 settings (clean, bottom/top 1 and 2) x seeds
        spec = {"name": "load", "models": [model], "datasets": ["sst2"],
                "corruption": {"sides": ["bottom", "top"], "levels": [0, 1, 2]}, "lrs": [1e-3], "seeds": seeds,
                "base": {"epochs": 2, "max_train": 200, "max_test": 100, "feature_samples": 50, "probe_samples": 50}}
        (tmp / "load.yaml").write_text(json.dumps(spec))
        # two finished runs first, so that the result pages have something to draw when idle
        (tmp / "first.yaml").write_text(json.dumps({**spec, "name": "first", "seeds": [999],
                                                    "corruption": {"sides": ["bottom"], "levels": [0, 4]}}))
        subprocess.run([sys.executable, "-m", "healcore", "--store", str(store), "grid", str(tmp / "first.yaml")],
                       cwd=ROOT, check=True, capture_output=True)
        idle = render_all(factory)
        proc = subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store), "grid",
                                 str(tmp / "load.yaml"), "--workers", str(args.workers)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        loaded: dict[str, list[float]] = {p: [] for p in PAGES}
        rounds = 0
        t0 = time.time()
        while proc.poll() is None:
            for page, seconds in render_all(factory).items():
                loaded[page].append(seconds)
            rounds += 1
        runs = len([p for p in store.glob("*/status.json")])
        print(f"{runs} runs in the store; grid of {5 * len(seeds)} runs with {args.workers} workers took "
              f"{time.time() - t0:.0f}s; {rounds} rounds of all {len(PAGES)} pages rendered under load, none failed")
        print(f"{'page':24s} {'idle':>8s} {'median':>8s} {'worst':>8s}")
        for page in PAGES:
            xs = loaded[page] or [float('nan')]
            print(f"{page:24s} {idle[page]:7.2f}s {statistics.median(xs):7.2f}s {max(xs):7.2f}s")


if __name__ == "__main__":
    main()
