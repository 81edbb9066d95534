"""Screenshots of every dashboard page, for the README and docs.

Run: python tools/screenshots.py --store runs/schedule --out docs/screenshots --compare lr_schedule:constant:linear
Starts `streamlit run app.py` on a free port against the store and drives Debian's chromium with Playwright, at
1280x800 (the window the layout is tested at), full page.
"""
import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
sys.path.insert(0, str(ROOT))
from dashboard.common import PAGES  # noqa: E402

SHOTS = {url.lower() or "home": url for _, _, _, url, _ in PAGES}
SHOTS.update({"heatmaps": SHOTS.pop("grid_heatmaps"), "curves": SHOTS.pop("degradation_curves"),
              "epochs": SHOTS.pop("healing_over_epochs")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="runs")
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--compare", metavar="KEY:A:B",
                    help="also shoot the heatmaps and curves comparing A with B on KEY (compare.png, compare_curves.png)")
    ap.add_argument("--only", nargs="*", help="shoot these names only")
    args = ap.parse_args()
    shots = dict(SHOTS)
    if args.compare:
        key, a, b = args.compare.split(":")
        query = f"?by={key}&a={a}&b={b}"
        shots.update({"compare": f"Grid_heatmaps{query}", "compare_curves": f"Degradation_curves{query}"})
    if args.only:
        shots = {name: path for name, path in shots.items() if name in args.only}
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Path(args.store).resolve()
    # a store inside the repository is shown as the user would type it (runs/...), not as this machine's path
    shown = store.relative_to(ROOT) if store.is_relative_to(ROOT) else store
    env = {**os.environ, "HEALCORE_RUNS": str(shown)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        time.sleep(4)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            for name, path in shots.items():
                page.goto(f"http://127.0.0.1:{port}/{path}")
                page.wait_for_selector("h1", timeout=60_000)
                page.wait_for_timeout(8000 if name in ("embeddings", "where_healing_happens", "compare",
                                                       "compare_curves") else 3000)
                page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                       timeout=120_000)  # the script has finished: every chart is drawn
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print("saved", out / f"{name}.png")
            browser.close()
    finally:
        os.killpg(proc.pid, 15)


if __name__ == "__main__":
    main()
