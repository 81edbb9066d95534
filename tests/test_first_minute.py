"""The first minute after Start, as a new user meets it: a store whose runs are all queued, a clean cell that
collapsed (the reference of every claim), a report aimed at a folder that holds someone else's, and a double
click on Start."""
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from healcore.core.config import RunConfig
from healcore.results import synthetic as syn
from healcore.store.runs import RunStore

from conftest import ROOT, wait_for
from pages_helpers import TITLES, open_page, texts


@pytest.fixture()
def queued_only(tmp_path, monkeypatch):
    """What Start leaves for the first seconds: a live grid record whose four runs have no folder yet."""
    store = RunStore(tmp_path / "runs")
    store.ensure()
    configs = [RunConfig(model="minilm-l6", dataset="sst2", corrupt=c, lr=5e-5) for c in
               ("none", "bottom:3", "top:3", "bottom:6")]
    syn.queue(store, "demo", configs)
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    return store


@pytest.mark.parametrize("title", TITLES)
def test_every_page_of_a_store_with_only_queued_runs_says_they_are_queued(title, queued_only):
    at = open_page(title)
    assert not at.exception, at.exception
    assert "No runs in" not in texts(at), title  # Launch says 4 queued: no page may say there are none


@pytest.mark.integration  # starts processes
def test_status_and_report_of_a_store_with_only_queued_runs(queued_only, tmp_path):
    status = subprocess.run([sys.executable, "-m", "healcore", "--store", str(queued_only.root), "status"],
                            capture_output=True, text=True, cwd=ROOT)
    assert status.returncode == 0, status.stderr
    assert "4 runs, 4 queued" in status.stdout and "grid demo: 0/4 completed; running" in status.stdout
    report = subprocess.run([sys.executable, "-m", "healcore", "--store", str(queued_only.root), "report", "--out",
                             str(tmp_path / "rep")], capture_output=True, text=True, cwd=ROOT)
    assert report.returncode == 2 and report.stderr.count("\n") == 1, report.stderr
    assert "no completed run" in report.stderr and "4 queued" in report.stderr
    assert not (tmp_path / "rep").exists()


def test_report_of_an_empty_store_is_one_line(tmp_path):
    from healcore.cli import main

    assert main(["--store", str(tmp_path / "nothing"), "report", "--out", str(tmp_path / "rep")]) == 2


# ------------------------------------------------------------------------------------------ collapsed reference
def collapsed_clean_store(root):
    """A grid whose clean cell collapsed at every learning rate (the majority class, F1 34 on SST-2)."""
    store = syn.build(root, levels=(0, 3, 6), seeds=(0, 1), lrs=(5e-5, 1e-2))
    for run_id in store.run_ids():
        if store.config(run_id)["corrupt"] == "none":
            syn.collapse(store, run_id)
    return store


def test_a_collapsed_clean_cell_judges_no_claim_and_scores_no_recovery(tmp_path):
    from healcore.results import cells, claims
    from healcore.results.paper_claims import REFERENCE_FAILED
    from healcore.results.runs_table import load_runs

    table = cells(load_runs(collapsed_clean_store(tmp_path / "runs").root))
    clean = table[table["side"] == "clean"].iloc[0]
    # a clean model that did not learn is a failed fine-tuning, not a finding: no reference for its line
    assert clean["did_not_learn"] and any("collapsed" in f for f in clean["value_flags"])
    assert table["recovery"].isna().all()  # never -0.8 for top 50% and 0.5 for bottom 50%
    assert table["reference_failed"].str.contains("clean cell").all()
    verdicts = claims(table)
    assert set(verdicts["verdict"]) == {REFERENCE_FAILED}
    assert verdicts["evidence"].str.contains("did not learn").all()


def test_a_collapsed_corrupted_cell_is_a_flagged_measurement_in_the_claims(tmp_path):
    """A heavily corrupted model that predicts one class did not heal: that is the measurement. It stays in its
    cell and in the claims (excluding it dropped exactly the worst level from claim 3), flagged."""
    from healcore.results import cells, claims
    from healcore.results.runs_table import load_runs

    store = syn.build(tmp_path / "runs", levels=(0, 3, 6), seeds=(0, 1, 2), lrs=(5e-5,))
    for run_id in store.run_ids():
        if store.config(run_id)["corrupt"] == "top:3":
            syn.collapse(store, run_id)
    table = cells(load_runs(store.root))
    top = table[table["side"] == "top"].iloc[0]
    assert top["did_not_learn"] and not top["value_failed"] and top["n_seeds"] == 3 and top["f1"] < 40
    verdicts = claims(table).set_index("claim")
    bottom_top = verdicts.loc["bottom corruption hurts more than top"]
    assert bottom_top["verdict"] == "not supported" and "top 33.33" in bottom_top["evidence"]


def test_the_curves_page_says_the_claims_were_not_judged(tmp_path, monkeypatch):
    store = collapsed_clean_store(tmp_path / "runs")
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page("Degradation curves")
    assert not at.exception
    shown = at.dataframe[0].value
    assert set(shown["verdict"]) == {"⚠ not judged: the clean cell failed"}


# ------------------------------------------------------------------------------------------ report destination
def test_report_never_replaces_a_report_it_did_not_write_without_force(tmp_path):
    from healcore.cli import main

    store = syn.build(tmp_path / "runs", levels=(0, 6), seeds=(0,), lrs=(5e-5,))
    other = syn.build(tmp_path / "other", levels=(0, 6), seeds=(0,), lrs=(5e-5,))
    docs = tmp_path / "docs"
    (docs / "figures").mkdir(parents=True)
    shipped = docs / "REPRODUCTION.md"
    shipped.write_text("# A study written by hand\n")
    figure = docs / "figures" / "reproduction-curves.png"
    figure.write_bytes(b"not to be touched")
    args = ["--store", str(store.root), "report", "--out", str(docs), "--name", "reproduction"]
    assert main(args) == 2
    assert shipped.read_text() == "# A study written by hand\n" and figure.read_bytes() == b"not to be touched"
    assert main(args + ["--force"]) == 0 and "synthetic" not in shipped.read_text()[:10]
    assert main(args) == 0  # the same command, from the same store, writes it again
    assert main(["--store", str(other.root)] + args[2:]) == 2  # another store's report stays
    assert main(["--store", str(store.root), "report", "--out", str(tmp_path / "fresh")]) == 0
    assert (tmp_path / "fresh" / "REPORT.md").is_file()  # the default name is no longer the shipped one


# ------------------------------------------------------------------------------------------ one driver per grid
def test_a_second_start_of_a_running_grid_is_refused_in_one_line(tmp_path, tiny_bert):
    from healcore.core.errors import ConfigError
    from healcore.grids.launch import launch
    from healcore.grids.plan import make_plan
    from healcore.results.runs_table import load_runs

    root = tmp_path / "runs"
    spec = {"name": "twice", "models": [tiny_bert], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom"], "levels": [0, 1]}, "lrs": [1e-3],
            "base": {"epochs": 1, "max_train": 80, "max_test": 40, "max_length": 32, "feature_samples": 10,
                     "probe_samples": 20, "analysis_samples": 10}}
    started = launch(make_plan(spec, RunStore(root)), root)
    runs = load_runs(root)
    assert len(runs) == 2 and set(runs["state"]) <= {"queued", "running"}  # at once, before the driver writes
    with pytest.raises(ConfigError, match="grid twice is already running"):
        launch(make_plan(spec, RunStore(root)), root)
    second = subprocess.run([sys.executable, "-m", "healcore", "--store", str(root), "grid",
                             str(root / ".grids" / "specs" / "twice.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert second.returncode == 2 and "grid twice is already running" in second.stderr, second.stderr
    record_path = root / ".grids" / "twice.json"
    assert wait_for(lambda: json.loads(record_path.read_text()).get("state") == "finished", timeout=300)
    record = json.loads(record_path.read_text())
    assert record["pid"] == started["pid"] and record["result"]["completed"] == 2, record
    log = (root / ".grids" / "twice.log").read_text()
    assert log.count("grid twice: 2 runs") == 1, log  # one driver ran; none interleaved its lines
    assert "the plan its Start launched" in log  # the driver took the launched plan, not a second expansion


def test_start_is_off_while_the_grid_of_that_name_runs(queued_only):
    at = open_page("Launch", {"preset": "demo"})
    assert not at.exception
    start = next(b for b in at.button if b.label == "Start")
    assert start.disabled and any("Grid demo is running" in i.value for i in at.info)


def test_a_recovery_heatmap_of_a_collapsed_reference_says_why(tmp_path, monkeypatch):
    from healcore.results import cells
    from healcore.results.charts import heatmap_frame
    from healcore.results.runs_table import load_runs

    table = cells(load_runs(collapsed_clean_store(tmp_path / "runs").root))
    frame = heatmap_frame(table, "recovery")
    assert frame["value"].isna().all() and frame["label"].str.contains("no reference").all()
    assert frame["why_failed"].str.contains("clean cell").all()
    assert np.isfinite(heatmap_frame(table, "f1")["value"]).all()


# ------------------------------------------------------------------------------------------ rough edges
@pytest.fixture()
def absurd_lr(tmp_path, monkeypatch):
    """A grid with lr 5e-5 beside an absurd 1e-2 at which every run collapsed (validation too)."""
    store = syn.build(tmp_path / "runs", datasets=("sst2", "ag_news"), levels=(0, 3, 6), seeds=(0, 1), lrs=(5e-5, 1e-2))
    for run_id in store.run_ids():
        if store.config(run_id)["lr"] == 1e-2:
            syn.collapse(store, run_id)
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    return store


def test_a_learning_rate_is_written_one_way_everywhere(absurd_lr):
    from healcore.results import cells, load_runs
    from healcore.results.charts import heatmap_frame
    from healcore.results.keys import lr_text

    assert [lr_text(x) for x in (0.01, 5e-5, 2e-5, 1.5e-5)] == ["1e-2", "5e-5", "2e-5", "1.5e-5"]
    frame = heatmap_frame(cells(load_runs(absurd_lr.root)), "f1")
    assert set(frame["lr"]) <= {"1e-2", "5e-5"}
    at = open_page("Failures and surprises")
    shown = at.dataframe[0].value
    assert list(shown.columns[:2]) == ["run_id", "reason"]  # the reason is on screen at 1280 px, not off its edge
    assert set(shown["lr"]) == {"1e-2"}


def test_surprises_are_not_judged_against_a_collapsed_cell(tmp_path):
    from healcore.results import cells, load_runs

    store = syn.build(tmp_path / "runs", levels=(0, 3, 6), seeds=(0, 1, 2), lrs=(5e-5,))
    for run_id in store.run_ids():
        if store.config(run_id)["corrupt"] == "none":
            syn.collapse(store, run_id)
    table = cells(load_runs(store.root))
    # bottom and top 50% score far above the collapsed clean cell: no "more corruption, higher" from that
    assert not any("non-monotone" in s for s in table["surprises"].sum())


def test_the_runs_table_shows_scores_before_settings_and_run_names_are_unique(absurd_lr):
    at = open_page("Runs")
    columns = list(at.dataframe[0].value.columns)
    # at 1280 px about eight columns show: the scores, lr and seed among them; constant model and dataset last
    assert columns.index("test_f1_weighted") < 5 and columns.index("lr") < 8 and columns.index("seed") < 9
    assert columns[-2:] == ["model", "dataset"] or "model" not in columns[:8]
    from healcore.results import load_runs

    from pages_helpers import page_functions

    labels = page_functions("5_Healing_over_epochs", ["labels"])["labels"]
    runs = load_runs(absurd_lr.root)
    runs = pd.concat([runs, runs.assign(pooling="mean", run_id=runs["run_id"] + "-m")])
    assert labels(runs).is_unique and labels(runs).str.contains("mean pooling").any()


def test_run_curves_name_their_split_above_and_runs_in_distinct_colours():
    from healcore.results.charts import loss_curve, run_curves

    epochs = pd.DataFrame({"run": ["a", "a", "b", "b"], "epoch": [1, 2, 1, 2], "train_loss": [0.7, 0.7, 0.5, 0.4],
                           "validation_f1_weighted": [10.0, 10.0, 80, 85], "test_f1_weighted": [10.0, 10.0, 79, 84]})
    spec = run_curves(epochs).to_dict()
    line = spec["layer"][0]
    assert line["encoding"]["strokeDash"]["legend"]["orient"] == "top"
    assert line["encoding"]["color"]["scale"]["scheme"] == "tableau10"
    assert line["encoding"]["y"]["axis"]["format"] == ".1f"  # a flat, collapsed curve: never 10.000000000000
    assert loss_curve(epochs).to_dict()["encoding"]["y"]["axis"]["format"] == ".3~f"


def test_table1_marks_mean_what_its_caption_says_in_every_format(absurd_lr):
    from healcore.results import cells, export_table1, load_runs, note

    table = cells(load_runs(absurd_lr.root))
    csv = export_table1(table, "csv")
    assert "failed)" not in csv and "(surprise)" not in csv and "§" in csv  # a collapsed value is kept, flagged
    assert "*:" in note("csv") and "†N" in note("csv") and "§:" in note("csv") and "Bold:" in note("markdown")
    at = open_page("Export")
    assert any(note("csv") in c.value for c in at.caption)


@pytest.mark.integration  # starts processes
def test_home_status_and_grid_name_convergence_failures_beside_failed_runs(absurd_lr):
    at = open_page("Home")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Failed"] == "0" and int(metrics["Flagged runs"]) > 0  # collapsed runs: kept, flagged
    out = subprocess.run([sys.executable, "-m", "healcore", "--store", str(absurd_lr.root), "status"],
                         capture_output=True, text=True, cwd=ROOT)
    assert "flagged run(s) kept as measurements" in out.stdout and "collapsed" in out.stdout


def test_impossible_levels_are_refused_and_an_unknown_model_is_one_quick_line(tmp_path, monkeypatch):
    from healcore.core.errors import ConfigError, ModelError
    from healcore.core.model_facts import num_layers
    from healcore.grids.spec import expand

    for level, why in (("37%", "37% of 6 layers is not a whole number"), ("9", "9 layers asked, it has 6")):
        with pytest.raises(ConfigError, match=why):
            expand({"name": "x", "models": ["minilm-l6"], "corruption": {"levels": ["0%", level]}})
    assert expand("paper-table1").notes  # 25% of DistilBERT is skipped where BERT-base takes it
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    next(m for m in at.multiselect if m.label.startswith("Corruption levels")).set_value(["0%", "37%"]).run()
    assert any("fits no model of the grid" in e.value for e in at.error)
    assert not [b for b in at.button if b.label == "Start"]
    started = time.perf_counter()
    with pytest.raises(ModelError, match="the hub cannot be reached") as err:
        num_layers("nobody/no-such-model-xyz")
    assert time.perf_counter() - started < 10 and "\n" not in str(err.value) and str(err.value).endswith("reachable")


def test_run_detail_says_a_run_is_unknown_and_a_folder_that_is_no_store_says_so(absurd_lr, tmp_path, monkeypatch):
    at = open_page("Run detail", {"run": "no-such-run"})
    assert not at.exception and any("No run 'no-such-run'" in w.value for w in at.warning)
    elsewhere = tmp_path / "not-a-store"
    (elsewhere / "notes").mkdir(parents=True)
    (elsewhere / "data.csv").write_text("a,b\n")
    monkeypatch.setenv("HEALCORE_RUNS", str(elsewhere))
    at = open_page("Runs")
    assert not at.exception and any("is not a run store" in e.value for e in at.error)
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "brand-new"))
    assert "No runs in" in texts(open_page("Runs"))  # a new store: the next step, not an error
