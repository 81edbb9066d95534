"""Compare mode: two conditions cell by cell (A, B, A − B) with significance, honest cells, two stores, the paper as
a side, healing speed, the CLI's table in three formats, the report's section, the URL round trip and bad input."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from healcore.core.config import RunConfig
from healcore.core.errors import ConfigError
from healcore.results import cells
from healcore.results import compare as cmp
from healcore.results import load_runs
from healcore.results import synthetic as syn

from conftest import ROOT
from pages_helpers import open_page, texts


def pooling_store(root):
    """Both poolings on SST-2 and AG News, clean, bottom/top 3 and all 6 of 6 layers, 3 seeds: mean pooling 6
    points lower at bottom 50% (a clear effect), a touch apart elsewhere (noise); every SST-2 top-50% mean run
    collapsed (a measurement: it did not heal, flagged); every AG News top-50% mean run diverged (no measurement); a
    bottom-1 cell in mean pooling only."""
    store = syn.build(root, datasets=("sst2", "ag_news"), levels=(0, 3, 6), seeds=(0, 1, 2), lrs=(5e-5,))
    syn.build(root, datasets=("sst2", "ag_news"), levels=(0, 3, 6), seeds=(0, 1, 2), lrs=(5e-5,),
              base={"pooling": "mean"})
    rng = np.random.default_rng(7)
    for run_id in store.run_ids():
        cfg = store.config(run_id)
        if cfg["pooling"] != "mean":
            continue
        if cfg["corrupt"] == "top:3" and cfg["dataset"] == "sst2":
            syn.collapse(store, run_id)
        elif cfg["corrupt"] == "top:3" and cfg["dataset"] == "ag_news":
            syn.fail(store, run_id)
        else:
            syn.stray(store, run_id, by=(-6.0 if cfg["corrupt"] == "bottom:3" else 0.0) + float(rng.normal(0, 0.8)))
    for seed in (0, 1, 2):
        syn.write_run(store, RunConfig(dataset="sst2", corrupt="bottom:1", lr=5e-5, seed=seed, pooling="mean", epochs=3),
                      80.0 + seed, 6, ["negative", "positive"], rng)
    return store


@pytest.fixture(scope="session")
def pooled_store(tmp_path_factory):
    return pooling_store(tmp_path_factory.mktemp("pooled") / "runs")  # built once: the tests only read it


@pytest.fixture()
def pooled(pooled_store, monkeypatch):
    monkeypatch.setenv("HEALCORE_RUNS", str(pooled_store.root))
    return pooled_store


def chart_frames(at) -> list[pd.DataFrame]:
    """The data of every chart a page drew (AppTest has no element class for Vega-Lite charts)."""
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    frames = []
    for element in walk(at.main):
        if getattr(element, "type", None) == "vega_lite_chart":
            frames += [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in element.proto.datasets]
    return frames


def by_seed(runs: pd.DataFrame, ids) -> dict:
    sub = runs[runs["run_id"].isin(ids)]
    return dict(zip(sub["seed"], sub["test_f1_weighted"]))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down by hand: the i-th smallest p times (m - i), running maximum, capped at 1."""
    order, m = np.argsort(p), len(p)
    out, running = np.empty(m), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


# ------------------------------------------------------------------------------------------ the engine
def test_a_comparison_is_a_minus_b_with_tests_that_match_scipy(pooled):
    runs = load_runs(pooled.root)
    table = cells(runs)
    a, b = cmp.split(table, runs, "pooling", "cls", "mean")
    result = cmp.compare(a, b, "pooling")
    measured = result[result["status"] == ""]
    assert len(measured) == 7  # 2 datasets x 4 settings (clean, bottom and top 50%, all), less a diverged one
    # a collapsed cell is a measurement (the model did not heal), flagged, never dropped
    collapsed = measured[(measured["dataset"] == "sst2") & (measured["side"] == "top")].iloc[0]
    assert any(f.startswith("did not learn: collapsed") for f in collapsed["b_flags"]) and not collapsed["a_flags"]
    for r in measured.to_dict("records"):
        sa, sb = by_seed(runs, r["a_run_ids"]), by_seed(runs, r["b_run_ids"])
        assert r["delta"] == pytest.approx(np.mean(list(sa.values())) - np.mean(list(sb.values())))
        common = sorted(set(sa) & set(sb))
        assert r["test"] == "paired t-test over 3 seeds"
        assert r["p"] == pytest.approx(stats.ttest_rel([sa[s] for s in common], [sb[s] for s in common]).pvalue)
    assert np.allclose(measured["p_adj"], holm(measured["p"].to_numpy()))
    assert (measured["significant"] == (measured["p_adj"] < 0.05)).all()
    significant = set(measured[measured["significant"]]["side"] + " " + measured[measured["significant"]]["level"].astype(str))
    assert significant == {"bottom 0.5", "top 0.5"}  # the 6-point effect and the collapse survive Holm; noise does not
    failed = result[result["status"] == "failure in B"].iloc[0]
    assert failed["dataset"] == "ag_news" and failed["side"] == "top" and np.isnan(failed["delta"]) \
        and np.isnan(failed["p"])
    one_sided = result[result["status"] == "only in B"]
    assert len(one_sided) == 1 and np.isnan(one_sided.iloc[0]["delta"]) and np.isnan(one_sided.iloc[0]["a"])
    bh = cmp.compare(a, b, "pooling", correction="bh")
    bh_measured = bh[bh["p"].notna()]
    assert np.allclose(bh_measured["p_adj"], stats.false_discovery_control(bh_measured["p"].to_numpy(), method="bh"))


def test_one_seed_a_side_shows_the_difference_with_no_test(tmp_path):
    syn.build(tmp_path / "runs", levels=(0, 6), seeds=(0,), lrs=(5e-5,))
    syn.build(tmp_path / "runs", levels=(0, 6), seeds=(0,), lrs=(5e-5,), base={"lr_schedule": "linear"})
    runs = load_runs(tmp_path / "runs")
    result = cmp.compare(*cmp.split(cells(runs), runs, "lr_schedule", "constant", "linear"), "lr_schedule")
    assert (result["test"] == "n = 1, no test").all() and result["p"].isna().all() and not result["significant"].any()
    assert result["delta"].notna().all()


def test_each_side_keeps_its_own_best_learning_rate(tmp_path):
    store = syn.build(tmp_path / "runs", levels=(0,), seeds=(0, 1), lrs=(2e-5, 5e-5))
    syn.build(tmp_path / "runs", levels=(0,), seeds=(0, 1), lrs=(2e-5, 5e-5), base={"pooling": "mean"})
    for run_id in store.run_ids():  # mean pooling does better at 2e-5, on validation and test alike
        cfg = store.config(run_id)
        if cfg["pooling"] == "mean" and cfg["lr"] == 2e-5:
            summary = store.summary(run_id)
            summary["best"]["validation"]["f1_weighted"] += 20
            summary["best"]["test"]["f1_weighted"] += 20
            syn.atomic_write_json(store.files(run_id).summary, summary)
    runs = load_runs(store.root)
    row = cmp.compare(*cmp.split(cells(runs), runs, "pooling", "cls", "mean"), "pooling").iloc[0]
    assert (row["a_lr"], row["b_lr"]) == (5e-5, 2e-5)


def test_models_of_different_depths_align_on_the_share_of_layers(tmp_path):
    syn.build(tmp_path / "runs", models=(("deep", 12), ("shallow", 6)), levels=(0, 3, 6, 12), seeds=(0, 1, 2))
    runs = load_runs(tmp_path / "runs")
    result = cmp.compare(*cmp.split(cells(runs), runs, "model", "deep", "shallow"), "model")
    both = result[result["status"] == ""]
    # 0%, 50% bottom/top and 100% exist in both (6 of 12 is 3 of 6); 25% only in the deep model
    assert sorted(set(np.round(both["level"], 2))) == [0.0, 0.5, 1.0]
    assert set(result[result["status"] == "only in A"]["level"].round(2)) == {0.25}


def test_bad_comparisons_are_one_line():
    table = pd.DataFrame({"model": ["m", "m"], "dataset": ["d", "d"], "pooling": ["cls", "mean"],
                          "epochs": [3, 3], "side": ["clean", "clean"], "level": [0.0, 0.0]})
    with pytest.raises(ConfigError, match="'epochs' has a single value.*keys that compare: pooling"):
        cmp.split(table, table, "epochs", "3", "3")
    with pytest.raises(ConfigError, match="A and B are both pooling = cls"):
        cmp.split(table, table, "pooling", "cls", "cls")
    with pytest.raises(ConfigError, match="pooling = max is not in this selection"):
        cmp.split(table, table, "pooling", "cls", "max")


# ------------------------------------------------------------------------------------------ stores and the paper
def test_two_stores_match_on_experiments_and_a_subset_aligns(tmp_path):
    big = syn.build(tmp_path / "a", datasets=("sst2", "ag_news"), levels=(0, 3, 6), seeds=(0, 1, 2))
    small = syn.build(tmp_path / "b", datasets=("sst2",), levels=(0, 3), seeds=(0, 1, 2))
    runs_a, runs_b = load_runs(big.root), load_runs(small.root)
    a, b = cmp.store_sides(str(big.root), runs_a, cells(runs_a), str(small.root), runs_b, cells(runs_b))
    result = cmp.compare(a, b, None)
    matched = result[result["status"] == ""]
    assert len(matched) == 3 and set(matched["dataset"]) == {"sst2"}  # clean, bottom 50%, top 50%
    assert np.allclose(matched["delta"], 0.0)  # the same synthetic numbers: no difference
    assert (result["status"] == "only in A").sum() == 8 - 3  # the rest of A: SST-2 all layers, AG News
    other = syn.build(tmp_path / "c", datasets=("emotion",), levels=(0,), seeds=(0,))
    runs_c = load_runs(other.root)
    with pytest.raises(ConfigError, match="no run of .* matches an experiment"):
        cmp.store_sides(str(big.root), runs_a, cells(runs_a), str(other.root), runs_c, cells(runs_c))


def test_the_paper_is_a_side_absolute_for_its_models_and_relative_otherwise(tmp_path):
    from healcore.results.paper import paper_cells

    paper = paper_cells()
    assert not paper["value_failed"].any()  # a collapse is a measurement there too, flagged
    flagged = paper[paper["did_not_learn"]]
    assert len(paper) == 320
    # the paper's own outliers (16.98 on Emotion, BERT-large, bottom 25% and 50%) and every other cell at its task's
    # majority-class F1 (RTE's 30.05 is "not entailment" for every pair), never a clean cell
    assert len(flagged[(flagged["dataset"] == "emotion") & (flagged["f1"] == 16.98)]) == 2
    assert (flagged["side"] != "clean").all() and (flagged["f1"] < 45).all()
    store = syn.build(tmp_path / "bert", models=(("bert-base-uncased", 12),), levels=(0, 3, 6, 9, 12), seeds=(0,))
    runs = load_runs(store.root)
    side_b, relative = cmp.paper_side(cells(runs))
    assert not relative and side_b.name == "the paper (bert-base-uncased)"
    result = cmp.compare(cmp.Side("store", cells(runs), runs), side_b, cmp.PAPER_KEY)
    clean = result[result["side"] == "clean"].iloc[0]
    assert clean["b"] == 92.11 and clean["test"] == "n = 1, no test"  # Table 1, SST-2, BERT-base, clean
    mini = syn.build(tmp_path / "mini", levels=(0, 3, 6), seeds=(0, 1, 2))
    runs = load_runs(mini.root)
    side_b, relative = cmp.paper_side(cells(runs))
    assert relative
    result = cmp.compare(cmp.Side("store", cells(runs), runs), side_b, cmp.PAPER_KEY, relative=True)
    assert result[result["side"] == "clean"]["a"].iloc[0] == pytest.approx(100.0)
    assert result[result["side"] == "clean"]["b"].iloc[0] == pytest.approx(100.0)
    bottom = result[(result["side"] == "bottom") & (result["level"] == 0.5)].iloc[0]
    paper_sst2 = paper[(paper["table"] == "Table 1") & (paper["model"] == "bert-base-uncased") & (paper["dataset"] == "sst2")]
    expected = 100 * paper_sst2[(paper_sst2["side"] == "bottom") & (paper_sst2["level"] == 0.5)]["f1"].iloc[0] / 92.11
    assert bottom["b"] == pytest.approx(expected)


def test_healing_speed_is_the_first_epoch_at_a_share_of_clean(tmp_path):
    from healcore.results import healing_speed, load_epochs

    store = syn.build(tmp_path / "runs", levels=(0, 3, 6), seeds=(0, 1, 2), epochs=4)
    runs = load_runs(store.root)
    table = cells(runs)
    epochs = load_epochs(store.root)
    per_cell, per_run = healing_speed(table, epochs, share=0.95)
    clean_f1 = table[table["side"] == "clean"]["f1"].iloc[0]
    for r in table.to_dict("records"):
        curve = epochs[epochs["run_id"] == r["run_ids"][0]].sort_values("epoch")
        hit = curve[curve["test_f1_weighted"] >= 0.95 * clean_f1]
        assert per_run[r["run_ids"][0]] == (hit["epoch"].iloc[0] if len(hit) else np.inf)
    assert np.isinf(per_cell[table["side"] == "all"]).all()  # 62 F1 never reaches 95% of 90: not reached
    assert (per_cell[table["side"] == "clean"] <= 4).all()


# ------------------------------------------------------------------------------------------ the dashboard
def test_the_heatmaps_page_draws_a_b_and_the_difference_as_computed(pooled):
    at = open_page("Grid heatmaps", {"by": "pooling", "a": "cls", "b": "mean"})
    assert not at.exception and not [e.value for e in at.error if "convergence" not in e.value]
    frame = pd.concat(f for f in chart_frames(at) if "view" in f)  # the A, B and A − B views' data
    runs = load_runs(pooled.root)
    result = cmp.compare(*cmp.split(cells(runs), runs, "pooling", "cls", "mean"), "pooling")
    delta = frame[frame["view"] == "A − B"].drop_duplicates("align").set_index("align")
    for r in result.to_dict("records"):
        shown = delta.loc[r["align"]]
        if r["status"]:
            assert np.isnan(shown["value"]) and shown["label"] == r["status"]  # only in B, failure in B
        else:
            assert shown["value"] == pytest.approx(r["a"] - r["b"])
            assert shown["label"].endswith("★") == bool(r["significant"])
    failed = frame[(frame["view"] == "B") & (frame["status"] == "failure in B")]
    assert len(failed) and (failed["label"] == "✕ failed").all() and (failed["mark"] != "").all()
    collapsed = frame[(frame["view"] == "B") & (frame["dataset"] == "sst2") & (frame["setting"] == "top 50%")]
    assert collapsed["label"].str.startswith("⚠ ").all() and (collapsed["mark"] != "").all()  # kept, flagged
    assert "Holm" in texts(at) and "paired t-test" in texts(at)


def test_a_copied_url_reopens_the_comparison_and_its_selected_cell(pooled):
    runs = load_runs(pooled.root)
    result = cmp.compare(*cmp.split(cells(runs), runs, "pooling", "mean", "cls"), "pooling", correction="bh")
    cell = result[result["status"] == ""].iloc[0]
    query = {"by": "pooling", "a": "mean", "b": "cls", "metric": "Macro F1", "correction": "Benjamini-Hochberg",
             "scale": "fixed range", "cell": cell["align"]}
    at = open_page("Grid heatmaps", query)
    assert not at.exception
    chosen = {s.label: s.value for s in at.selectbox}
    assert chosen["Compare by"] == "pooling" and chosen["A: pooling ="] == "mean" and chosen["B: pooling ="] == "cls"
    assert chosen["Metric"] == "Macro F1" and chosen["Correction for many cells"] == "Benjamini-Hochberg"
    assert chosen["Colour scale"] == "fixed range"
    assert any("A: pooling = mean" in m.value for m in at.markdown)  # both sides' runs are listed
    assert len(at.dataframe) >= 2
    for key, value in query.items():
        assert at.query_params[key] == [value] or at.query_params[key] == value
    next(s for s in at.selectbox if s.label == "A: pooling =").set_value("cls").run()
    # B offers only the values that share an experiment with A: never A itself, never a refused pair
    b = next(s for s in at.selectbox if s.label == "B: pooling =")
    assert b.options == ["mean"] and b.value == "mean" and not any("A and B" in e.value for e in at.error)


def test_the_curves_page_overlays_a_and_b_and_judges_the_claims_on_each(pooled):
    at = open_page("Degradation curves", {"by": "pooling"})
    assert not at.exception
    frame = next(f for f in chart_frames(at) if "condition" in f)
    assert set(frame["condition"]) == {"A: pooling = cls", "B: pooling = mean"}
    b_top = (frame["condition"] == "B: pooling = mean") & (frame["setting"] == "top 50%")
    assert not (b_top & frame["panel"].str.endswith("ag_news")).any()  # a diverged cell is no point on a curve
    assert (b_top & frame["panel"].str.endswith("sst2")).any()  # a collapsed one is: the model did not heal
    assert any("A: pooling = cls" in c for c in at.dataframe[-1].value.columns)


def test_a_second_store_is_chosen_in_the_sidebar_inside_the_allowed_roots(pooled, tmp_path, monkeypatch):
    second = syn.build(tmp_path / "other", datasets=("sst2",), levels=(0, 3), seeds=(0, 1, 2))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", str(tmp_path))
    at = open_page("Grid heatmaps", {"by": "another run store", "store2": str(second.root)})
    assert not at.exception
    frame = pd.concat(f for f in chart_frames(at) if "view" in f)
    assert set(frame["dataset"]) >= {"sst2"}
    outside = open_page("Grid heatmaps", {"by": "another run store", "store2": "/etc"})
    assert not outside.exception and any("outside the allowed folders" in e.value for e in outside.error)
    (tmp_path / "not-a-store").mkdir()
    empty = open_page("Grid heatmaps", {"by": "another run store", "store2": str(tmp_path / "not-a-store")})
    assert not empty.exception and any("is not a run store" in e.value for e in empty.error)
    unrelated = syn.build(tmp_path / "unrelated", datasets=("emotion",), levels=(0,), seeds=(0,))
    none = open_page("Grid heatmaps", {"by": "another run store", "store2": str(unrelated.root)})
    assert not none.exception and any("matches an experiment" in e.value for e in none.error)


def test_comparing_on_a_key_that_does_not_vary_says_which_do(pooled):
    at = open_page("Grid heatmaps", {"by": "epochs"})
    assert not at.exception
    # a URL naming a key that does not vary falls back to the choices that exist; the CLI says why in one line
    assert next(s for s in at.selectbox if s.label == "Compare by").value != "epochs"


def test_the_paper_and_healing_speed_on_the_page(pooled):
    at = open_page("Grid heatmaps", {"by": "the paper"})
    assert not at.exception
    assert "The paper ran one seed per cell: no test." in texts(at) and "share (%)" in texts(at)
    at = open_page("Grid heatmaps", {"metric": "Healing speed (epochs to reach a share of clean)"})
    assert not at.exception
    frame = chart_frames(at)[0]
    assert "not reached" in set(frame["status"])


def test_the_export_page_offers_the_comparison_tables(pooled):
    at = open_page("Export", {"by": "pooling"})
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("LaTeX") == 2 and labels.count("Markdown") == 2  # Table 1 and the comparison
    assert "Tidy (CSV)" in labels  # the comparison's tidy table, as healcore compare --format tidy


# ------------------------------------------------------------------------------------------ CLI and report
@pytest.mark.parametrize("style,marker", [("md", "| model | dataset | clean (0%)"), ("csv", "model,dataset,clean (0%)"),
                                          ("latex", "\\begin{tabular}")])
@pytest.mark.integration  # starts processes
def test_the_cli_prints_the_table_in_each_format(pooled, style, marker, tmp_path):
    out = subprocess.run([sys.executable, "-m", "healcore", "--store", str(pooled.root), "compare", "--by", "pooling",
                          "--format", style], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert marker in out.stdout and "★" not in out.stdout
    assert "*" in out.stdout and "failure in B" in out.stdout and "only in B" in out.stdout
    if style != "csv":
        assert "Holm correction" in out.stdout and "paired t-test" in out.stdout
    written = tmp_path / f"table.{style}"
    again = subprocess.run([sys.executable, "-m", "healcore", "--store", str(pooled.root), "compare", "--by", "pooling",
                            "--format", style, "--out", str(written)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and written.read_text() == out.stdout


@pytest.mark.parametrize("args,expected", [
    (["--by", "epochs"], "'epochs' has a single value in this selection, so there is nothing to compare; keys that compare: pooling"),
    (["--by", "pooling", "--a", "cls", "--b", "cls"], "A and B are both pooling = cls"),
    (["--store2", "/nonexistent"], "--store2 /nonexistent is not a run store"),
    (["--against", "paper", "--paper-model", "gpt2"], "the paper ran"),
    (["--by", "pooling", "--metric", "bleu"], "metric 'bleu' is not one of"),
    ([], "say what to compare"),
])
@pytest.mark.integration  # starts processes
def test_the_cli_says_what_is_wrong_in_one_line(pooled, args, expected):
    out = subprocess.run([sys.executable, "-m", "healcore", "--store", str(pooled.root), "compare", *args],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and expected in out.stderr, out.stderr


def test_the_report_has_a_comparisons_section(pooled, tmp_path):
    from healcore.cli import main

    assert main(["--store", str(pooled.root), "report", "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "REPORT.md").read_text()
    section = text.split("## Comparisons")[1].split("\n## ")[0]
    assert "### pooling = cls vs pooling = mean" in section and "Holm correction" in section
    assert "failure in B" in section
