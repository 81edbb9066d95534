"""Every dashboard page smoke-tested with AppTest against a store made by real tiny runs."""
import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT

FILES = {"launch": "1_Launch", "heatmaps": "2_Grid_heatmaps", "curves": "3_Degradation_curves",
         "epochs": "4_Healing_over_epochs", "outliers": "5_Outliers", "embeddings": "6_Embeddings",
         "run_detail": "7_Run_detail", "export": "8_Export"}
PAGES = list(FILES)


class page:
    """A dashboard page opened the way a user gets there: app.py first, then the page."""

    def __init__(self, name: str):
        self.at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        self.file = f"pages/{FILES[name]}.py"

    def run(self) -> AppTest:
        self.at.run()
        self.at.switch_page(self.file)
        return self.at.run()


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_a_real_store(name, tiny_store, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tiny_store))
    at = page(name).run()
    assert not at.exception, at.exception
    assert at.title[0].value
    if name in ("heatmaps", "curves", "epochs", "embeddings", "outliers"):
        assert not [i for i in at.info if "No runs" in i.value]


def test_heatmap_has_every_cell_and_marks(tiny_store, monkeypatch):
    from pages_helpers import heatmap_frame_for

    frame = heatmap_frame_for(tiny_store)
    # clean and all-layers appear in both panels; bottom/top 25% and 50% in their own
    assert sorted(frame.groupby("panel")["level"].apply(sorted).tolist()) == [["0%", "100%", "25%", "50%"]] * 2


def test_curves_page_shows_the_three_claims(tiny_store, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tiny_store))
    at = page("curves").run()
    claims = at.dataframe[0].value
    assert set(claims["claim"]) == {"corrupted models never fully recover", "more corruption, worse",
                                    "bottom corruption hurts more than top"}


def test_curves_page_warns_when_the_clean_model_was_still_rising(tiny_store, tmp_path, monkeypatch):
    """Clean runs given a third epoch far above the first two read as still rising, and the page says so."""
    import json
    import shutil

    store = tmp_path / "runs"
    shutil.copytree(tiny_store, store)
    for config in store.glob("*/config.json"):
        if json.loads(config.read_text())["corrupt"] == "none":
            metrics = config.parent / "metrics.jsonl"
            last = json.loads(metrics.read_text().splitlines()[-1])
            last.update(epoch=3, validation={**last["validation"], "f1_weighted": 99.0})
            metrics.write_text(metrics.read_text() + json.dumps(last) + "\n")
    monkeypatch.setenv("HEALCORE_RUNS", str(store))
    at = page("curves").run()
    assert not at.exception
    flat = next(d.value for d in at.dataframe if "verdict" in d.value and "last-third gain" in d.value)
    assert list(flat["verdict"]) == ["still rising"] and list(flat["best epoch"]) == [3]
    assert any("still rising" in w.value for w in at.warning)


def test_embeddings_page_caches_projections_on_disk(tiny_store, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tiny_store))
    at = page("embeddings").run()
    assert not at.exception
    assert list(tiny_store.glob("*/features/best.tsne.npz"))
    assert any("silhouette" in str(c.value).lower() for c in at.caption)
    mtimes = {p: p.stat().st_mtime_ns for p in tiny_store.glob("*/features/best.tsne.npz")}
    page("embeddings").run()  # a revisit reads the cache, it does not recompute
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_embeddings_page_uses_runs_that_kept_features(tiny_store, tmp_path, monkeypatch):
    """A store copied back without most features (seed 0 here) still shows panels, from the next seed."""
    import shutil

    store = tmp_path / "runs"
    shutil.copytree(tiny_store, store)
    for config in store.glob("*/config.json"):
        if json.loads(config.read_text())["seed"] == 0:
            shutil.rmtree(config.parent / "features")
    monkeypatch.setenv("HEALCORE_RUNS", str(store))
    at = page("embeddings").run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert any("silhouette" in str(c.value).lower() for c in at.caption)  # the chart was drawn


def test_empty_store_shows_a_next_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "none"))
    for name in PAGES[1:]:
        at = page(name).run()
        assert not at.exception, name
        assert any("demo" in i.value for i in at.info), name


def test_store_that_is_a_file_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "f"))
    at = page("heatmaps").run()
    assert not at.exception and "is a file" in at.error[0].value


def test_home_page_summarises_the_store(tiny_store, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tiny_store))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception and at.title[0].value == "healcore"
    assert next(m for m in at.metric if m.label == "Completed").value == "19"


def test_sidebar_store_choice_is_kept_across_pages(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", str(tiny_store))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.sidebar.text_input[0].set_value(str(tiny_store)).run()
    at.switch_page("pages/7_Run_detail.py").run()
    assert not at.exception and at.selectbox[0].options and at.sidebar.text_input[0].value == str(tiny_store)


def test_bad_grid_is_explained_next_to_the_widgets(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = page("launch").run()
    at.radio[0].set_value("Build a grid").run()
    levels = next(m for m in at.multiselect if m.label.startswith("Corruption levels"))
    levels.set_value(["33%"]).run()
    assert not at.exception
    assert any("cannot run" in e.value for e in at.error)


def test_launch_page_starts_a_real_run(tmp_path, monkeypatch, tiny_bert):
    """Build a one-run grid with the widgets, press Start: a separate process writes the run folder."""
    store = tmp_path / "runs"
    monkeypatch.setenv("HEALCORE_RUNS", str(store))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", tiny_bert)
    at = page("launch").run()
    at.radio[0].set_value("Build a grid").run()
    models = next(m for m in at.multiselect if m.label == "Models")
    models.set_value([tiny_bert]).run()
    next(m for m in at.multiselect if m.label.startswith("Corruption levels")).set_value(["0%"]).run()
    next(n for n in at.number_input if n.label == "Epochs").set_value(1).run()
    next(n for n in at.number_input if n.label.startswith("Max train")).set_value(100).run()
    next(n for n in at.number_input if n.label.startswith("Max test")).set_value(50).run()
    next(t for t in at.text_input if t.label == "Grid name").set_value("from-ui").run()
    next(n for n in at.number_input if n.label == "Runs per GPU").set_value(3).run()
    assert not at.exception and not at.error
    next(b for b in at.button if b.label == "Start").click().run()
    assert any("Started grid from-ui" in s.value for s in at.success), ([e.value for e in at.error], at.exception)
    deadline = time.time() + 180
    while time.time() < deadline:
        done = [p for p in store.glob("*/status.json") if json.loads(p.read_text()).get("state") == "completed"]
        if done:
            break
        time.sleep(0.5)
    assert done, (store / ".grids" / "from-ui.log").read_text()
    assert json.loads((store / ".grids" / "from-ui.json").read_text())["runs_per_gpu"] == 3  # the widget reached the grid


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, monkeypatch, tiny_bert):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = page("launch").run()
    at.radio[0].set_value("Build a grid").run()
    next(m for m in at.multiselect if m.label == "Models").set_value([tiny_bert]).run()
    assert any("outside the allowed folders" in e.value for e in at.error)
    assert not any(b.label == "Start" for b in at.button)
    at.sidebar.text_input[0].set_value("/etc").run()
    assert any("outside the allowed folders" in e.value for e in at.error)
