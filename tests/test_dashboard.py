"""The dashboard with Streamlit's AppTest: every page on a real trained store and on synthetic stores with every
kind of trouble; flag counts that agree across pages; the linked selection; the runs table; state in the URL;
live and queued runs; estimates before the first run; labels and colours; no torch in the dashboard process."""
import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, wait_for
from pages_helpers import TITLES, launch_builder, open_page, texts

def charts_on(at: AppTest) -> int:
    """How many Vega-Lite charts the page drew (AppTest has no element class for them)."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    return sum(1 for e in walk(at.main) if getattr(e, "type", None) == "vega_lite_chart")


@pytest.fixture(scope="session")
def troubled_store(tmp_path_factory):
    """A synthetic store with every kind of trouble: a failed run, a collapse, a flat loss and a stray seed (at
    both learning rates), a surprising cell, a damaged summary, a running run and a queued grid. Built once: the
    tests read it (and `troubled` refreshes what ages)."""
    from healcore.core.config import RunConfig
    from healcore.results import synthetic as syn
    from healcore.results.runs_table import load_runs

    store = syn.build(tmp_path_factory.mktemp("troubled") / "runs", datasets=("sst2", "ag_news"), analysis=True,
                      features=True)
    runs = load_runs(store.root)

    def pick(dataset, corrupt, lr, seed):
        return runs[(runs["dataset"] == dataset) & (runs["corrupt"] == corrupt) & (runs["lr"] == lr)
                    & (runs["seed"] == seed)]["run_id"].iloc[0]

    syn.fail(store, pick("sst2", "bottom:1", 2e-5, 0))
    syn.collapse(store, pick("sst2", "top:2", 5e-5, 1))
    syn.flatten(store, pick("ag_news", "bottom:3", 2e-5, 2))
    syn.stray(store, pick("ag_news", "top:1", 5e-5, 0))
    syn.damage(store, pick("ag_news", "top:3", 2e-5, 1))
    for seed in (0, 1, 2):  # top 50% of SST-2 scores above top 33%: more corruption, higher (a surprise)
        for lr in (2e-5, 5e-5):
            syn.stray(store, pick("sst2", "top:3", lr, seed), by=+12.0)
    running = pick("sst2", "bottom:2", 5e-5, 2)
    syn.run_now(store, running)
    queued = [RunConfig(model="minilm-l6", dataset="sst2", corrupt="bottom:4", lr=lr, seed=s, epochs=3)
              for lr in (2e-5, 5e-5) for s in (0, 1, 2)]
    syn.queue(store, "more", [RunConfig.from_stored(store.config(running))] + queued)
    return store, running


@pytest.fixture()
def troubled(troubled_store, monkeypatch):
    """The troubled store, its running run's and its grid's heartbeats fresh (a run silent for 90 s reads as
    interrupted), as this page's store."""
    from healcore.results import synthetic as syn

    store, running = troubled_store
    syn.run_now(store, running)
    store.grid_heartbeat_path("more").touch()
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    return store


# ------------------------------------------------------------------------------------------ every page
@pytest.mark.parametrize("title", TITLES)
def test_every_page_renders_a_real_trained_store(title, tiny_store, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tiny_store))
    at = open_page(title)
    assert not at.exception, at.exception
    assert at.title[0].value
    assert "No runs in" not in texts(at)


@pytest.mark.parametrize("title", TITLES)
def test_every_page_renders_a_store_with_every_kind_of_trouble(title, troubled):
    at = open_page(title)
    assert not at.exception, at.exception


@pytest.mark.integration  # starts processes
def test_pages_never_import_torch(troubled):
    """The dashboard process stays torch-free: every page rendered, then sys.modules checked (a fresh process)."""
    code = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
os.environ["HEALCORE_RUNS"] = {str(troubled.root)!r}
from streamlit.testing.v1 import AppTest
from dashboard.common import PAGES
for file, title, *_ in PAGES:
    at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout=120)
    at.run()
    if file != "app.py":
        at.switch_page(file)
    at.run()
    assert not at.exception, (title, at.exception)
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
assert not heavy, heavy
print("torch-free")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "HEALCORE_DATA": str(ROOT.parent / "shared" / "data")})
    assert out.returncode == 0 and "torch-free" in out.stdout, out.stderr[-2000:]


# ------------------------------------------------------------------------------------------ flags agree
def test_flag_counts_agree_across_pages_report_and_exports(troubled, tmp_path):
    from healcore.cli import main as cli
    from healcore.results import cells, flags
    from healcore.results.charts import heatmap_frame
    from healcore.results.paper_tables import export_table1
    from healcore.results.runs_table import load_runs

    runs = load_runs(troubled.root)
    table = cells(runs)
    counts = flags.summary(runs, table)
    line = flags.summary_line(counts)
    # the failed run is a convergence failure; collapse, flat loss, a stray seed and the damaged summary are flags
    assert counts["runs with convergence failures"] == 1, runs[runs["failed"]][["run_id", "failures"]]
    assert counts["flagged runs (kept)"] == 4, runs[runs["flagged"]][["run_id", "flags"]]
    assert counts["surprising cells"] >= 1
    for title in ("Home", "Grid heatmaps", "Degradation curves", "Runs", "Export"):
        assert line in texts(open_page(title)), title
    page = open_page("Failures and surprises")
    assert [m.value for m in page.metric] == [str(v) for v in counts.values()]
    # each surprising cell is listed with its whole reason (a static table: nothing cut at a column's edge)
    shown = page.table[0].value
    assert len(shown) == counts["surprising cells"] and all(len(why) > 20 for why in shown["why"])
    frame = heatmap_frame(table, "f1").drop_duplicates("cell_id")
    assert int((frame["failures"] > 0).sum()) == counts["cells with convergence failures"]
    assert int(frame["failures"].sum()) == counts["runs with convergence failures"]
    assert int(frame["surprise"].sum()) == counts["surprising cells"]
    assert cli(["--store", str(troubled.root), "report", "--out", str(tmp_path / "report")]) == 0
    assert line in (tmp_path / "report" / "REPORT.md").read_text()
    csv = export_table1(table, "csv")
    # clean and all-layers cells appear in both panels: count each flagged cell once
    marked = table[(table["n_failures"] > 0) & table["method"].isin(["reinit", "-"])]
    expected = sum(2 if s in ("clean", "all") else 1 for s in marked["side"])
    assert csv.count("†") == expected


def test_a_failing_run_at_any_learning_rate_marks_its_cell_and_a_failed_only_cell_is_drawn(tmp_path):
    from healcore.results import cells
    from healcore.results import synthetic as syn
    from healcore.results.charts import heatmap_frame
    from healcore.results.runs_table import load_runs

    store = syn.build(tmp_path / "runs", levels=(0, 2, 6))
    runs = load_runs(store.root)
    worse_lr = runs[(runs["corrupt"] == "bottom:2") & (runs["lr"] == 2e-5)]["run_id"].iloc[0]  # not the kept lr
    syn.fail(store, worse_lr)
    for run_id in runs[runs["corrupt"] == "top:2"]["run_id"]:
        syn.fail(store, run_id)
    table = cells(load_runs(store.root))
    bottom = table[(table["side"] == "bottom")].iloc[0]
    assert bottom["lr"] == 5e-5 and bottom["n_failures"] == 1  # counted although its lr was not kept
    top = table[table["side"] == "top"].iloc[0]
    assert top["n_failures"] == 6 and pd.isna(top["f1"])
    frame = heatmap_frame(table, "f1")
    assert frame[frame["setting"] == "top 33%"]["label"].iloc[0] == "failed ✕6"  # a cell, not a gap


# ------------------------------------------------------------------------------------------ linked views
def test_a_selected_cell_lists_its_runs_flags_first(troubled):
    from healcore.results import cells
    from healcore.results.keys import cell_id
    from healcore.results.runs_table import load_runs

    table = cells(load_runs(troubled.root))
    flagged = table[(table["n_failures"] > 0) & (table["dataset"] == "sst2")].iloc[0]
    at = open_page("Grid heatmaps", {"cell": cell_id(flagged.to_dict())})
    assert not at.exception
    listed = at.dataframe[0].value
    assert set(listed["run_id"]) == set(flagged["all_run_ids"])
    assert listed.iloc[0]["failures"]  # the failing run comes first, with its reason


def test_a_click_on_a_chart_goes_to_the_url_and_a_click_elsewhere_clears_it():
    def script():
        import types

        import streamlit as st

        from dashboard import common

        picked = st.session_state.get("fake", [])
        common.selected_cell(types.SimpleNamespace(selection={"cell": [{"cell_id": c} for c in picked]}), "chart")

    at = AppTest.from_function(script, default_timeout=60)
    at.run()
    assert "cell" not in at.query_params
    at.session_state["fake"] = ["abc123"]
    at.run()
    assert at.query_params["cell"] in ("abc123", ["abc123"])
    at.session_state["fake"] = []
    at.run()
    assert "cell" not in at.query_params


def test_run_detail_shows_the_flags_at_the_top_and_offers_the_files(troubled):
    from healcore.results.runs_table import load_runs

    runs = load_runs(troubled.root)
    collapsed = runs[runs["flags"].map(lambda f: any("collapsed" in x for x in f))]["run_id"].iloc[0]
    at = open_page("Run detail", {"run": collapsed})
    assert not at.exception
    assert "Flagged" in at.warning[0].value and "did not learn: collapsed" in at.warning[0].value
    failing = runs[runs["failed"]]["run_id"].iloc[0]
    assert "Convergence failure" in open_page("Run detail", {"run": failing}).error[0].value
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"log.txt", "config.json", "summary.json", "all (zip)"} <= set(labels), labels


# ------------------------------------------------------------------------------------------ runs table
def test_runs_table_filters_groups_and_compares_from_the_url(troubled):
    from healcore.results.runs_table import load_runs

    runs = load_runs(troubled.root)
    at = open_page("Runs", {"filter_by": "lr", "f_lr": "2e-05"})
    assert not at.exception
    shown = at.dataframe[0].value
    assert len(shown) == int((runs["lr"] == 2e-5).sum()) and set(shown["lr"]) == {"2e-5"}  # one spelling (lr_text)
    at = open_page("Runs", {"group": "side", "metric": "test_f1_weighted"})
    grouped = at.dataframe[0].value
    assert set(grouped["side"]) == set(runs["side"].astype(str)) and "mean ± std" in grouped
    assert grouped.set_index("side").loc["clean", "runs"] == int((runs["side"] == "clean").sum())
    a, b = runs[(runs["side"] == "clean") & (runs["dataset"] == "sst2")]["run_id"].iloc[:2]
    at = open_page("Runs", {"sel": [a, b]})
    diff = at.dataframe[1].value
    assert list(diff.columns) == [a, b] and "seed" in diff.index or "lr" in diff.index
    assert "model" not in diff.index  # keys they share are left out


def test_runs_table_helpers_are_pure_and_quick():
    from pages_helpers import page_functions

    f = page_functions("2_Runs", ["apply_filters", "grouped", "config_diff", "tidy", "filter_keys"])
    frame = pd.DataFrame({"run_id": ["a1", "a2", "b1"], "lr": [1e-5, 2e-5, 2e-5], "seed": [0, 1, 0],
                          "failures": ["", "x", ""], "test_f1_weighted": [80.0, 70.0, 90.0]})
    assert list(f["apply_filters"](frame, "a", False, {})["run_id"]) == ["a1", "a2"]
    assert list(f["apply_filters"](frame, "", True, {})["run_id"]) == ["a2"]
    assert list(f["apply_filters"](frame, "", False, {"lr": ["2e-05"]})["run_id"]) == ["a2", "b1"]
    g = f["grouped"](frame, ["lr"], "test_f1_weighted").set_index("lr")
    assert g.loc["2e-05", "mean ± std"] == "80.00 ± 14.14" and g.loc["2e-05", "failures"] == 1


# ------------------------------------------------------------------------------------------ URL state
def test_a_copied_url_reopens_the_same_view_and_widgets_write_the_url(troubled):
    at = open_page("Grid heatmaps", {"metric": "Macro F1", "dataset": "ag_news"})
    assert not at.exception
    assert at.selectbox(key="url-metric").value == "Macro F1"
    assert at.sidebar.multiselect(key="urls-dataset").value == ["ag_news"]
    at.selectbox(key="url-metric").set_value("Accuracy").run()
    assert at.query_params["metric"] in ("Accuracy", ["Accuracy"])
    at.sidebar.multiselect(key="urls-dataset").set_value(["sst2", "ag_news"]).run()
    assert "dataset" not in at.query_params  # every option chosen: the URL stays clean
    at = open_page("Run detail", {"run": troubled.run_ids()[3]})
    assert at.selectbox(key="url-run").value == troubled.run_ids()[3]
    at = open_page("Home", {"store": str(troubled.root)})
    assert at.sidebar.text_input[0].value == str(troubled.root)


def test_pages_sharing_a_url_key_in_different_widgets_do_not_clash(troubled):
    """Datasets are a multiselect filter on Grid heatmaps and a single choice on Where healing happens."""
    from dashboard.common import page

    at = open_page("Grid heatmaps", {"dataset": "ag_news"})
    at.switch_page(page("Where healing happens")).run()
    assert not at.exception and at.selectbox(key="url-dataset").value in ("ag_news", "sst2")
    at.switch_page(page("Grid heatmaps")).run()
    assert not at.exception
    assert set(at.sidebar.multiselect(key="urls-dataset").value) <= {"ag_news", "sst2"}
    assert at.sidebar.multiselect(key="urls-dataset").value  # never emptied into "nothing shown"


# ------------------------------------------------------------------------------------------ live
def test_running_and_queued_runs_show_as_such(troubled):
    home = open_page("Home")
    metrics = {m.label: m.value for m in home.metric}
    assert metrics["Running"] == "1" and metrics["Queued"] == "6"
    glance = texts(home)
    assert "**Grid more** running: 0 of 7 done, 1 running, 6 queued" in glance and "ETA –" not in glance, glance
    from healcore.results import cells
    from healcore.results.charts import heatmap_frame
    from healcore.results.runs_table import load_runs

    frame = heatmap_frame(cells(load_runs(troubled.root)), "f1")
    assert "queued" in set(frame["label"]) and frame["status"].str.startswith("running").any()
    launch = open_page("Launch")
    table = launch.dataframe[0].value
    running = table[table["state"] == "running"].iloc[0]
    assert running["epoch"] == "1/3" and running["step"] == "5/10" and running["ETA"] != "–"


def test_a_grid_whose_driver_on_another_host_went_silent_is_not_shown_running(troubled):
    """Its heartbeat file stale beyond 90 s, the grid's unstarted runs are no longer counted as queued."""
    import os

    from healcore.results.runs_table import load_runs
    from healcore.store.grids import grid_records

    beat = troubled.grid_heartbeat_path("more")
    assert grid_records(troubled)[0]["alive"] and (load_runs(troubled.root)["state"] == "queued").sum() == 6
    os.utime(beat, (time.time() - 200, time.time() - 200))
    assert not grid_records(troubled)[0]["alive"]
    assert (load_runs(troubled.root)["state"] == "queued").sum() == 0


def test_pages_of_a_store_whose_runs_are_all_in_flight_say_so(tmp_path, monkeypatch):
    from healcore.results import synthetic as syn

    store = syn.build(tmp_path / "runs", levels=(0, 6), seeds=(0,), lrs=(5e-5,))
    for run_id in store.run_ids():
        syn.run_now(store, run_id)
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    for title in ("Grid heatmaps", "Degradation curves", "Embeddings", "Healing over epochs"):
        at = open_page(title)
        assert not at.exception and "No runs in" not in texts(at), title
        assert "running" in texts(at) or charts_on(at), title


# ------------------------------------------------------------------------------------------ launch
def test_a_fresh_store_gets_a_prior_estimate_and_presets_describe_themselves(tmp_path, monkeypatch):
    from healcore.grids.spec import describe, preset_names

    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Launch")
    estimate = next(m for m in at.metric if m.label.startswith("Estimated run time"))
    assert estimate.label == "Estimated run time (prior)" and estimate.value not in ("unknown", "–")
    assert any("from a prior" in c.value for c in at.caption)
    for name in preset_names():
        assert describe(name)
    at.selectbox(key="url-preset").set_value("paper-table1").run()
    assert any(describe("paper-table1") in c.value for c in at.caption)


def test_a_grid_whose_check_fails_still_shows_its_size(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HEALCORE_DATA", str(tmp_path / "no-data"))
    at = open_page("Launch")
    assert not at.exception
    assert next(m for m in at.metric if m.label == "Runs").value == "4"
    assert any("cannot run" in e.value for e in at.error)
    assert not any(b.label == "Start" for b in at.button)


def test_bad_grid_is_explained_next_to_the_widgets(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    levels = next(m for m in at.multiselect if m.label.startswith("Corruption levels"))
    levels.set_value(["33%"]).run()
    assert not at.exception
    assert any("cannot run" in e.value for e in at.error)


def test_launch_page_starts_a_real_run(tmp_path, monkeypatch, tiny_bert):
    """Build a one-run grid with the widgets, press Start: a separate process writes the run folder."""
    store = tmp_path / "runs"
    at = launch_builder(tiny_bert, store, monkeypatch)
    next(m for m in at.multiselect if m.label.startswith("Corruption levels")).set_value(["0%"]).run()
    next(n for n in at.number_input if n.label == "Epochs").set_value(1).run()
    next(n for n in at.number_input if n.label.startswith("Max train")).set_value(100).run()
    next(n for n in at.number_input if n.label.startswith("Max test")).set_value(50).run()
    next(s for s in at.selectbox if s.label == "Learning-rate schedule").set_value("linear").run()
    next(t for t in at.text_input if t.label == "Grid name").set_value("from-ui").run()
    # no GPU here: "Runs per GPU" is not offered (it is where nvidia-smi sees cards, or for a Ray cluster)
    assert not any(n.label == "Runs per GPU" for n in at.number_input)
    next(n for n in at.number_input if n.label.startswith("Fuse up to")).set_value(2).run()
    next(s for s in at.selectbox if s.label == "Compile the training step").set_value("default").run()
    assert not at.exception and not at.error
    next(b for b in at.button if b.label == "Start").click().run()
    assert any("Started grid from-ui" in s.value for s in at.success), ([e.value for e in at.error], at.exception)
    def completed() -> list:
        return [p for p in store.glob("*/status.json") if json.loads(p.read_text()).get("state") == "completed"]

    assert wait_for(lambda: bool(completed()), timeout=180, every=0.5), (store / ".grids" / "from-ui.log").read_text()
    done = completed()
    record = json.loads((store / ".grids" / "from-ui.json").read_text())
    assert record["runs_per_gpu"] == 1 and record["fuse"] == 2  # the widgets reached the grid
    config = json.loads((done[0].parent / "config.json").read_text())
    assert config["lr_schedule"] == "linear" and config["compile"] == "default"


def test_a_grid_started_on_an_unreachable_ray_address_says_why_on_launch(tmp_path, monkeypatch, tiny_bert):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", tiny_bert)
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    next(m for m in at.multiselect if m.label == "Models").set_value([tiny_bert]).run()
    next(m for m in at.multiselect if m.label.startswith("Corruption levels")).set_value(["0%"]).run()
    next(t for t in at.text_input if t.label == "Grid name").set_value("on-ray").run()
    at.radio(key="executor").set_value("a Ray cluster").run()
    next(t for t in at.text_input if t.label == "Ray address").set_value(f"127.0.0.1:{port}").run()
    next(b for b in at.button if b.label == "Start").click().run()
    assert any("Started grid on-ray" in s.value for s in at.success)
    from healcore.store.grids import live_grid
    from healcore.store.runs import RunStore

    # the driver prints its error a moment before it exits: wait for the grid to have ended, not for the line
    assert wait_for(lambda: live_grid(RunStore(tmp_path / "runs"), "on-ray") is None, timeout=120, every=0.5)
    at = open_page("Launch")
    shown = " ".join(e.value for e in at.error)
    assert f"The grid stopped before running: cannot reach a Ray cluster at 127.0.0.1:{port}" in shown, shown
    assert not list((tmp_path / "runs").glob("*/config.json"))


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, monkeypatch, tiny_bert):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    next(m for m in at.multiselect if m.label == "Models").set_value([tiny_bert]).run()
    assert any("outside the allowed folders" in e.value for e in at.error)
    assert not any(b.label == "Start" for b in at.button)
    at.sidebar.text_input[0].set_value("/etc").run()
    assert any("outside the allowed folders" in e.value for e in at.error)


# ------------------------------------------------------------------------------------------ labels, colours
def test_a_dataset_folder_is_labelled_by_its_name_everywhere(tmp_path, monkeypatch):
    from healcore.results import cells
    from healcore.results import synthetic as syn
    from healcore.results.paper_tables import export_table1
    from healcore.results.runs_table import load_runs

    folder = str(tmp_path / "data" / "my_reviews")
    store = syn.build(tmp_path / "runs", datasets=(folder,), levels=(0, 3, 6), seeds=(0,))
    runs = load_runs(store.root)
    assert set(runs["dataset"]) == {"my_reviews"} and set(runs["dataset_path"]) == {folder}
    for style in ("csv", "markdown", "latex"):
        text = export_table1(cells(runs), style)
        assert "my_reviews" in text.replace("\\_", "_") and str(tmp_path) not in text
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page("Export")
    assert str(tmp_path) not in " ".join(map(str, at.dataframe[0].value.columns))


def test_twenty_classes_get_twenty_colours_and_more_fold_into_other():
    from healcore.results.charts import class_colours

    twenty = pd.Series([f"c{i}" for i in range(20) for _ in range(3)])
    labels, scale = class_colours(twenty)
    assert len(scale.domain) == 20 and scale.scheme == "tableau20"
    many = pd.Series([f"c{i}" for i in range(25) for _ in range(25 - i)])
    labels, scale = class_colours(many)
    assert len(scale.domain) == 20 and "other" in scale.domain and len(set(scale.range)) == 20
    assert set(labels[labels != "other"]) == {f"c{i}" for i in range(19)}  # the largest keep their colour


def test_confusion_matrix_is_row_normalised():
    from healcore.results.charts import confusion

    spec = confusion([[8, 2], [1, 3]], ["a", "b"]).to_dict()
    values = {(r["true"], r["predicted"]): r["share"] for r in spec["datasets"][next(iter(spec["datasets"]))]}
    assert values[("a", "a")] == pytest.approx(80.0) and values[("b", "b")] == pytest.approx(75.0)


def test_empty_store_shows_a_next_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "none"))
    for title in TITLES[2:]:
        at = open_page(title)
        assert not at.exception, title
        assert any("demo" in i.value for i in at.info), title


def test_store_that_is_a_file_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "f"))
    at = open_page("Grid heatmaps")
    assert not at.exception and "is a file" in at.error[0].value


def test_sidebar_store_choice_is_kept_across_pages(troubled, tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", str(troubled.root))
    from dashboard.common import page

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.sidebar.text_input[0].set_value(str(troubled.root)).run()
    at.switch_page(page("Run detail")).run()
    assert not at.exception and at.selectbox[0].options and at.sidebar.text_input[0].value == str(troubled.root)


def test_charts_that_stretch_to_their_column_keep_their_plot_height_under_a_long_legend():
    """Vega's default autosize ("fit") counts a legend in the chart's height: four long run names below the F1
    chart squeezed its plot to a few pixels. Charts that fit their column's width fit the width only."""
    from healcore.results import charts

    names = [f"minilm-l6 · ag_news · setting {i} · lr 5e-05 · seed 0" for i in range(4)]
    f1 = pd.DataFrame([{"label": n, "split": s, "epoch": e, "F1": 80.0 + e} for n in names
                       for s in ("validation", "test") for e in range(3)])
    losses = pd.DataFrame([{"label": n, "epoch": e, "train_loss": 1.0 / e} for n in names for e in (1, 2)])
    runs = pd.DataFrame([{"run": n, "epoch": e, "validation_f1_weighted": 80.0, "test_f1_weighted": 81.0}
                         for n in names for e in (1, 2)])
    stretched = [*charts.epoch_curves(f1, losses), charts.run_curves(runs), charts.loss_curve(runs.assign(train_loss=1.0))]
    for chart in stretched:
        spec = chart.to_dict()
        assert spec["width"] == "container" and spec["autosize"]["type"] == "fit-x", spec.get("autosize")
