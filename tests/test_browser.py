"""End to end in a real browser: Debian chromium driven by Playwright against `streamlit run app.py`.

- Every page fits its window at 1280x800 and 1500x1000: the main block never scrolls sideways and no chart is
  wider than the column it sits in.
- From a flagged heatmap cell to its run's loss curve in two clicks.
- The demo preset launched from the Launch page with tiny settings runs to the end, and the heatmap and an
  embedding panel render.
"""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                                      reason="needs Debian's chromium (apt-get install chromium)")]

# The main block's sideways overflow, and each chart's width against the room its column leaves it.
MEASURE = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const block = document.querySelector('[data-testid="stMainBlockContainer"]');
  const room = block.getBoundingClientRect().right - parseFloat(getComputedStyle(block).paddingRight);
  const charts = [...document.querySelectorAll('.vega-embed')].map(e => {
    const r = (e.querySelector('svg, canvas') || e).getBoundingClientRect();
    return {width: Math.round(r.width), room: Math.round(room - r.left)};
  });
  // text cut short: an element that clips its own text (ellipsis or hidden overflow) narrower than the text
  const cut = [...main.querySelectorAll('p, span, label, h1, h2, h3, h4, summary, div')].filter(e => {
    if (!e.childNodes.length || ![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) return false;
    const st = getComputedStyle(e);
    const clips = st.textOverflow === 'ellipsis' || st.overflow === 'hidden' || st.overflowX === 'hidden';
    return clips && e.scrollWidth > e.clientWidth + 1 && e.getBoundingClientRect().width > 0;
  }).map(e => e.textContent.trim().slice(0, 60));
  return {scroll: main.scrollWidth, client: main.clientWidth, charts, cut};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(store) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HEALCORE_RUNS": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    assert wait_for(listening, timeout=60, every=0.3, proc=proc), proc.stdout.read().decode(errors="replace")[-2000:]
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def troubled_server(tmp_path):
    """A synthetic store with flags, a second dataset and its layer analyses, served by Streamlit."""
    from healcore.results import synthetic as syn
    from healcore.results.runs_table import load_runs

    store = syn.build(tmp_path / "runs", datasets=("ag_news", "sst2"), analysis=True, features=True)
    runs = load_runs(store.root)
    clean = runs[(runs["dataset"] == "ag_news") & (runs["side"] == "clean")]
    syn.collapse(store, clean[clean["lr"] == 5e-5]["run_id"].iloc[0])
    proc, url = serve(store.root)
    yield url, store
    stop(proc)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:  # a server with sessions still open can take its time: it is a test server
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.mark.parametrize("size", [(1280, 800), (1500, 1000)], ids=["1280x800", "1500x1000"])
def test_every_page_fits_its_window(troubled_server, browser, size):
    from dashboard.common import PAGES

    url, _ = troubled_server
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(90_000)
    problems = []
    for _, title, _, path, _ in PAGES:
        problems += layout_problems(page, url, title, path)
    assert not problems, problems


def layout_problems(page, url: str, title: str, path: str) -> list[str]:
    """Open a page and say where it does not fit: a sideways scroll, a chart wider than its column, or a label or
    heading cut short (tables draw on a canvas: their cells are not measured here)."""
    page.goto(f"{url}/{path}")
    page.wait_for_selector("h1")
    page.wait_for_timeout(2500)  # charts draw after the page
    m = page.evaluate(MEASURE)
    problems = [f"{title}: the page scrolls sideways ({m['scroll']} > {m['client']} px)"] \
        if m["scroll"] > m["client"] else []
    return problems + [f"{title}: a chart is {c['width']} px wide in {c['room']} px" for c in m["charts"]
                       if c["width"] > c["room"] + 1] + [f"{title}: text cut short: {t!r}" for t in m["cut"]]


def test_from_a_flagged_cell_to_its_runs_loss_curve_in_two_clicks(troubled_server, browser):
    url, store = troubled_server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(90_000)
    page.goto(f"{url}/Grid_heatmaps")
    chart = page.locator(".vega-embed").first
    chart.wait_for()
    page.wait_for_timeout(2000)
    box = chart.bounding_box()
    # the bottom panel's first row (ag_news) and first column (clean): the cell with the collapsed run
    page.mouse.click(box["x"] + 110, box["y"] + 45)  # click 1
    table = page.locator('[data-testid="stDataFrame"]').last
    page.get_by_text("Runs of minilm-l6 · ag_news · clean (0%)").wait_for()
    table.scroll_into_view_if_needed()
    t = table.bounding_box()
    page.mouse.click(t["x"] + 16, t["y"] + 35 + 18)  # click 2: the first run, flags first
    page.get_by_role("heading", name="Run detail").wait_for()
    alert = page.get_by_test_id("stAlertContentWarning").first  # a collapse is kept, flagged: no failure
    alert.wait_for()
    assert "Flagged" in alert.inner_text() and "collapsed" in alert.inner_text()
    page.get_by_text("training loss").first.wait_for()  # the loss curve's axis
    assert "Run_detail?run=" in page.url


@pytest.fixture()
def empty_server(tmp_path):
    proc, url = serve(tmp_path / "runs")
    yield url, tmp_path / "runs"
    stop(proc)


def test_launch_demo_in_a_real_browser(empty_server, browser, tmp_path):
    from playwright.sync_api import expect

    url, store = empty_server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(f"{url}/Launch")
    expect(page.get_by_role("heading", name="Launch")).to_be_visible()
    page.get_by_text("Adjust (epochs, data caps and schedule for every run)").click()
    for label, value in (("Epochs", "1"), ("Max train rows (0 = all)", "100"), ("Max test rows (0 = all)", "60")):
        box = page.get_by_label(label).first
        box.fill(value)
        box.press("Enter")
        page.wait_for_timeout(800)
    expect(page.get_by_text("To run")).to_be_visible()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("Started grid demo")).to_be_visible()
    def states() -> list:
        return [json.loads(p_.read_text()).get("state") for p_ in store.glob("*/status.json")]

    assert wait_for(lambda: states() == ["completed"] * 4, timeout=600, every=1), states()
    page.goto(f"{url}/Grid_heatmaps")
    expect(page.get_by_role("heading", name="Grid heatmaps")).to_be_visible()
    expect(page.locator(".vega-embed").first).to_be_visible()
    page.goto(f"{url}/Embeddings")
    expect(page.get_by_role("heading", name="Embeddings")).to_be_visible()
    expect(page.locator(".vega-embed").first).to_be_visible(timeout=120_000)
    expect(page.get_by_text("silhouette", exact=False).first).to_be_visible()
    page.screenshot(path=str(tmp_path / "embeddings.png"))


@pytest.fixture()
def compare_server(tmp_path):
    """Six datasets in both poolings, 3 seeds: the comparison a user makes of the paper's Table 3 against Table 1."""
    from healcore.results import synthetic as syn

    datasets = ("sst2", "ag_news", "emotion", "imdb", "dbpedia_14", "mrpc")
    store = syn.build(tmp_path / "runs", datasets=datasets, levels=(0, 2, 3, 4, 6), seeds=(0, 1, 2), lrs=(5e-5,))
    syn.build(tmp_path / "runs", datasets=datasets, levels=(0, 2, 3, 4, 6), seeds=(0, 1, 2), lrs=(5e-5,),
              base={"pooling": "mean"})
    proc, url = serve(store.root)
    yield url
    stop(proc)


@pytest.mark.parametrize("path", ["Grid_heatmaps", "Degradation_curves"])
def test_a_comparison_of_six_datasets_fits_1280x800(compare_server, browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(90_000)
    page.goto(f"{compare_server}/{path}?by=pooling&a=cls&b=mean")
    page.wait_for_selector("h1")
    page.locator(".vega-embed").first.wait_for()
    page.wait_for_timeout(3000)
    m = page.evaluate(MEASURE)
    assert m["charts"] and m["scroll"] <= m["client"], m
    assert all(c["width"] <= c["room"] + 1 for c in m["charts"]), m["charts"]
    if path == "Grid_heatmaps":  # the three panels, A, B and A − B, with their titles
        for title in ("A: pooling = cls", "B: pooling = mean", "A − B"):
            assert page.locator(".vega-embed").first.get_by_text(title).count() >= 1, title


@pytest.fixture()
def messy_server(tmp_path):
    """The store of many experiments with noisy seeds (tests/test_messy_store.py), served by Streamlit."""
    from test_messy_store import build_messy

    store = build_messy(tmp_path / "runs")
    proc, url = serve(store.root)
    yield url, store
    stop(proc)


def test_every_page_and_comparison_fits_1280x800_on_a_store_of_many_experiments(messy_server, browser):
    """Every page, and the comparison views by each setting that compares, on the messy store: nothing scrolls
    sideways, no chart is wider than its column, and no page shows an exception."""
    from dashboard.common import PAGES

    url, _ = messy_server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(90_000)
    paths = [(title, path) for _, title, _, path, _ in PAGES]
    paths += [(f"{p} by {key}", f"{p}?by={key}") for p in ("Grid_heatmaps", "Degradation_curves", "Export")
              for key in ("pooling", "lr_schedule", "epochs", "label_column")]
    problems = []
    for title, path in paths:
        problems += layout_problems(page, url, title, path)
        if page.get_by_test_id("stException").count():
            problems.append(f"{title}: an exception on the page")
    assert not problems, problems
