"""End to end in a real browser: Debian chromium driven by Playwright against `streamlit run app.py`.

Launches the demo preset with tiny settings from the Launch page, waits for the runs to finish, and
checks that the heatmap and an embedding panel render.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                                      reason="needs Debian's chromium (apt-get install chromium)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    port = free_port()
    store = tmp_path / "runs"
    env = {**os.environ, "HEALCORE_RUNS": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", store
    os.killpg(proc.pid, 15)
    proc.wait(timeout=20)


def test_launch_demo_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, store = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(f"{url}/Launch")
        expect(page.get_by_role("heading", name="Launch")).to_be_visible()
        page.get_by_text("Adjust (epochs and data caps for every run)").click()
        for label, value in (("Epochs", "1"), ("Max train rows (0 = all)", "100"), ("Max test rows (0 = all)", "60")):
            box = page.get_by_label(label).first
            box.fill(value)
            box.press("Enter")
            page.wait_for_timeout(800)
        expect(page.get_by_text("To run")).to_be_visible()
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text("Started grid demo")).to_be_visible()
        deadline = time.time() + 600
        while time.time() < deadline:
            states = [json.loads(p_.read_text()).get("state") for p_ in store.glob("*/status.json")]
            if len(states) == 4 and all(s == "completed" for s in states):
                break
            time.sleep(1)
        assert len(states) == 4 and all(s == "completed" for s in states), states
        page.goto(f"{url}/Grid_heatmaps")
        expect(page.get_by_role("heading", name="Grid heatmaps")).to_be_visible()
        expect(page.locator(".vega-embed").first).to_be_visible()
        page.goto(f"{url}/Embeddings")
        expect(page.get_by_role("heading", name="Embeddings")).to_be_visible()
        expect(page.locator(".vega-embed").first).to_be_visible(timeout=120_000)
        expect(page.get_by_text("silhouette", exact=False).first).to_be_visible()
        page.screenshot(path=str(tmp_path / "embeddings.png"))
        browser.close()
