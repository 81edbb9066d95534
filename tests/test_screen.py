"""What the screen says: legends that show both line styles, every side of a CKA panel drawn, values named for what
they are (a share of clean is no F1; the test F1 at the chosen epoch beside the best on test), the paper's model
named on its side, and the small things a new user read wrong."""
import numpy as np
import pandas as pd
import pytest

from healcore.results import synthetic as syn

from pages_helpers import open_page, texts

pytestmark = pytest.mark.unit


def test_one_runs_curves_keep_the_line_style_legend():
    from healcore.results.charts import run_curves

    epochs = pd.DataFrame({"epoch": [1, 2], "validation_f1_weighted": [70.0, 72.0], "test_f1_weighted": [69.0, 74.0]})
    spec = run_curves(epochs).to_dict()
    line, points = spec["layer"]
    # a hidden colour legend on the same field as the dash merged into it and hid the solid/dashed legend
    assert line["encoding"]["color"] == {"value": "#1f77b4"}
    assert line["encoding"]["strokeDash"]["legend"]["symbolType"] == "stroke"
    # a line mark with point=True drew the legend's line samples blank: points are a layer of their own
    assert line["mark"]["type"] == "line" and "point" not in line["mark"] and points["mark"]["type"] == "point"
    assert "strokeDash" not in points["encoding"]


def test_every_side_has_a_line_in_the_layer_similarity_panels():
    from healcore.results.charts import layer_similarity

    frame = pd.DataFrame({"side": ["bottom", "top", "all"] * 2, "layer": ["layer 1"] * 3 + ["layer 2"] * 3,
                          "depth": [1] * 3 + [2] * 3, "cka_clean": [0.5, 0.9, -0.02, 0.6, 0.95, 0.1],
                          "corrupted": [True, False, True, False, True, True], "runs": 1,
                          "setting": "x", "level_label": ["50% of the layers", "50% of the layers",
                                                          "100% of the layers"] * 2})
    spec = layer_similarity(frame, "cka_clean", "CKA").to_dict()
    colour = spec["spec"]["layer"][0]["encoding"]["color"]["scale"]
    assert colour["domain"] == ["bottom", "top", "all"]  # the 100% panel was empty: "all" had no colour
    assert spec["spec"]["layer"][0]["encoding"]["y"]["scale"]["domain"][0] <= -0.02  # debiased CKA may dip below 0
    assert spec["spec"]["layer"][0]["encoding"]["x"]["axis"]["labelOverlap"] is False  # every layer labelled


def test_run_detail_names_its_f1_and_shows_the_best_on_test_beside_it(tmp_path, monkeypatch):
    store = syn.build(tmp_path / "runs", levels=(0,), seeds=(0,), lrs=(5e-5,))
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    run_id = store.run_ids()[0]
    at = open_page("Run detail", {"run": run_id})
    metrics = {m.label: m.value for m in at.metric}
    summary = store.summary(run_id)
    assert metrics["Test F1, chosen epoch"] == f"{summary['best']['test']['f1_weighted']:.2f}"
    assert metrics["Test F1, best epoch"] == f"{summary['best_on_test']:.2f}"
    assert "Chosen epoch 3 (on validation)" in texts(at)


def test_a_relative_comparison_is_not_labelled_f1_and_names_the_papers_model(tmp_path, monkeypatch):
    from healcore.results import cells, load_runs
    from healcore.results import compare as cmp
    from healcore.results.compare_charts import compare_frame, compare_heatmap

    store = syn.build(tmp_path / "runs", levels=(0, 3, 6), seeds=(0,), lrs=(5e-5,))
    table = cells(load_runs(store.root))
    side_b, relative = cmp.paper_side(table)
    result = cmp.compare(cmp.Side("store", table), side_b, cmp.PAPER_KEY, relative=relative)
    assert relative and set(result["model_b"]) == {"bert-base-uncased"}
    frame = compare_frame(result)
    assert set(frame["model"]) == {"minilm-l6 vs bert-base-uncased"}
    spec = compare_heatmap(frame, "store", side_b.name, "f1", relative=True).to_dict()
    titles = [v["spec"]["layer"][0]["encoding"]["color"].get("title") for v in spec["vconcat"]]
    assert "weighted F1, % of own clean cell (A and B)" in titles and "weighted F1 (A and B)" not in str(spec)
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page("Grid heatmaps", {"by": "the paper"})
    assert not at.exception
    caption = texts(at)
    assert "no test No measurement" not in caption and "no test." in caption  # sentences no longer run together


def test_export_names_its_value_and_offers_markdown_once(tmp_path, monkeypatch):
    store = syn.build(tmp_path / "runs", levels=(0, 3, 6), seeds=(0, 1), lrs=(5e-5,))
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page("Export")
    value = next(s for s in at.selectbox if s.label == "Value")
    assert value.value == "f1" and "weighted F1" in str(value.proto.options)
    assert not any(e.label == "Markdown" for e in at.expander)
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("Markdown") == 1


def test_no_runs_per_gpu_without_a_gpu_and_the_empty_store_promises_no_duration(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    at = open_page("Launch")
    assert not any(n.label == "Runs per GPU" for n in at.number_input)
    home = open_page("Home")
    assert "10 minutes" not in texts(home) and "estimates its time" in texts(home)


def test_the_variant_picker_opens_on_the_variant_with_most_scored_cells(tmp_path, monkeypatch):
    syn.build(tmp_path / "runs", levels=(0, 1, 2, 3, 6), seeds=(0, 1), lrs=(5e-5,))  # the demo: 9 cells
    syn.build(tmp_path / "runs", levels=(0,), seeds=(0,), lrs=(5e-5,), base={"pooling": "mean"})  # a newer, small grid
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Grid heatmaps")
    variant = next(s for s in at.selectbox if s.label.startswith("Variant"))
    assert variant.value == "cls pooling" and np.isin(["mean pooling"], variant.options).all()


def test_a_grid_built_with_the_demos_settings_is_the_demo(tmp_path, monkeypatch):
    """'Build a grid' left at its defaults names the demo's runs (it differed in the artefact sample sizes, so a
    finished demo read 'Already finished 0' and would have run again)."""
    from healcore.core.config import RunConfig
    from healcore.grids.spec import expand

    store = syn.RunStore(tmp_path / "runs")
    store.ensure()
    rng = np.random.default_rng(0)
    for cfg in expand("demo").configs:
        syn.write_run(store, RunConfig.from_dict(cfg.to_dict()), 80.0, 6, ["negative", "positive"], rng)
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Already finished"] == "4" and metrics["To run"] == "0", metrics


# ------------------------------------------------------------------------------------------ one model of time
def test_the_grid_eta_starts_at_the_estimate_and_follows_what_runs_took():
    from healcore.grids.launch import estimate_check
    from healcore.grids.progress import grid_progress, run_progress

    t0 = 1_000_000.0
    record = {"name": "g", "alive": True, "state": "running", "started": t0, "workers": 1, "runs_per_gpu": 1,
              "run_ids": ["a", "b", "c", "d"], "estimates": {"a": 10.0, "b": 10.0, "c": 10.0, "d": 10.0},
              "estimated_wall_s": 40.0, "configs": {}}
    row = dict(model="m", epochs=3, error=None)
    queued = pd.DataFrame([{**row, "run_id": i, "state": "queued", "started": None, "ended": None, "progress": None}
                           for i in "abcd"])
    assert grid_progress(record, queued, at=t0)["eta_s"] == pytest.approx(40.0)  # the estimate shown before Start
    # run a took twice its estimate; b has just started (loading: no epoch yet); c and d wait
    runs = pd.DataFrame([
        {**row, "run_id": "a", "state": "completed", "started": t0, "ended": t0 + 20, "progress": None},
        {**row, "run_id": "b", "state": "running", "started": t0 + 20, "ended": None, "progress": {"epoch": 0}},
        {**row, "run_id": "c", "state": "queued", "started": None, "ended": None, "progress": None},
        {**row, "run_id": "d", "state": "queued", "started": None, "ended": None, "progress": None}])
    at = t0 + 25
    assert grid_progress(record, runs, at=at)["eta_s"] == pytest.approx(2 * 20 + (2 * 10 - 5))
    b = run_progress(runs.iloc[1].to_dict(), at=at)
    assert b["starting"] and b["eta_s"] is None and not run_progress(runs.iloc[0].to_dict(), at=at)["starting"]
    assert estimate_check({"estimated_wall_s": 40.0, "started": t0}, t0 + 80) == {
        "estimated_s": 40.0, "took_s": 80.0, "ratio": 2.0}
    assert estimate_check({"started": t0}, t0 + 80) is None  # a record from before estimates were kept
