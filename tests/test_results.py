"""Tidy tables, cells, the two kinds of flag, claims, exports and reports. Synthetic stores in healcore's format
(healcore/synthetic.py) stand in for trained ones wherever the numbers need not come from training; the report
is also generated once from a store of real tiny runs."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from healcore.core.config import RunConfig
from healcore.core.layers import setting_label
from healcore.results import cells, claims
from healcore.results import synthetic as syn
from healcore.results.flags import cell_surprises, run_failures, run_flags
from healcore.results.keys import line_keys
from healcore.results.paper_claims import bottom_vs_top_tests
from healcore.results.paper_tables import export_table1
from healcore.results.runs_table import load_epochs, load_runs


@pytest.fixture()
def store(tmp_path):
    """The shape of the trained tiny store: a 4-layer model on SST-2; clean, bottom/top 1 and 2, all 4; 3 seeds;
    a second learning rate for the clean cell only (19 runs)."""
    s = syn.build(tmp_path / "runs", models=(("tiny", 4),), levels=(0, 1, 2, 4), lrs=(1e-3,), seeds=(0, 1, 2),
                  epochs=2, features=True)
    cfg = RunConfig(model="tiny", dataset="sst2", lr=3e-3, seed=0, epochs=2)
    syn.write_run(s, cfg, 70.0, 4, ["negative", "positive"], np.random.default_rng(1), features=True)
    return s


def test_runs_table_has_levels_sides_and_metrics(store):
    runs = load_runs(store.root)
    assert len(runs) == 19 and set(runs["state"]) == {"completed"}
    assert set(runs["side"]) == {"clean", "bottom", "top", "all"}
    assert set(np.round(runs["level"], 2)) == {0.0, 0.25, 0.5, 1.0}
    assert runs["test_f1_weighted"].between(0, 100).all() and runs["probe_f1"].notna().all()
    assert {"validation_f1_weighted", "test_f1_weighted"} <= set(runs.columns)
    assert not any(c.startswith("vali_") for c in runs.columns)
    epochs = load_epochs(store.root)
    assert len(epochs) == 19 * 2 and epochs["validation_f1_weighted"].notna().all()


def test_cells_keep_the_best_lr_and_average_seeds(store):
    runs = load_runs(store.root)
    table = cells(runs)
    assert len(table) == 6 and (table["n_seeds"] == 3).all()
    clean = table[table["side"] == "clean"].iloc[0]
    assert clean["lrs_tried"] == 2 and clean["n_runs"] == 4
    clean_runs = runs[(runs["side"] == "clean") & (runs["lr"] == clean["lr"])]
    assert clean["f1"] == pytest.approx(clean_runs["test_f1_weighted"].mean())
    other = runs[(runs["side"] == "clean") & (runs["lr"] != clean["lr"])]
    assert clean_runs["validation_f1_weighted"].mean() >= other["validation_f1_weighted"].mean()


def test_recovery_ratio_is_relative_to_clean_and_all():
    from healcore.results.cell_table import _recovery

    t = _synthetic({("clean", 0): 90, ("bottom", .5): 75, ("all", 1.0): 60})
    assert list(_recovery(t)) == [1.0, 0.5, 0.0]
    assert _recovery(_synthetic({("clean", 0): 60, ("all", 1.0): 60})).isna().all()  # undefined, not 0/0


def test_failures_are_crashes_and_divergence_and_not_learning_is_a_kept_flag():
    r = {"state": "completed", "test_f1_weighted": 16.98, "majority_f1": 16.98, "first_loss": 1.7,
         "final_loss": 1.75, "epochs": 10}
    assert run_failures(r) == []  # a collapse is a measurement (the model did not heal), never dropped ...
    found = run_flags(r)  # ... but flagged, by its mechanism
    assert any("did not learn: collapsed" in f for f in found) and any("loss not decreasing" in f for f in found)
    assert run_failures({"state": "failed", "error": "training loss became nan at epoch 2"}) == ["diverged (NaN/inf loss)"]
    assert run_flags({"state": "completed", "test_f1_weighted": 90.0, "majority_f1": 33.0, "first_loss": 1.0,
                      "final_loss": 0.2, "epochs": 3}) == []
    assert run_failures({"state": "completed", "damaged": ["analysis.npz: cut short"]}) == []  # its F1 is intact
    assert run_flags({"state": "completed", "damaged": ["analysis.npz: cut short"]})[0].startswith(
        "damaged: analysis.npz: cut short (views that read it leave this run out")
    # words, not substrings: "info" and "inference" are no divergence
    for error in ("could not read tokenizer info", "CUDA error during inference"):
        assert run_failures({"state": "failed", "error": error}) == [f"failed: {error}"]
    assert run_failures({"state": "failed", "error": "loss is inf at step 3"}) == ["diverged (NaN/inf loss)"]


def test_a_stray_seed_is_a_warning_above_or_below_and_its_cell_is_shown_without_it_too(tmp_path):
    s = syn.build(tmp_path / "runs", levels=(0, 6), lrs=(5e-5,), seeds=(0, 1, 2, 3))
    runs = load_runs(s.root)
    low = runs[(runs["side"] == "clean") & (runs["seed"] == 2)]["run_id"].iloc[0]
    high = runs[(runs["side"] == "all") & (runs["seed"] == 1)]["run_id"].iloc[0]
    syn.stray(s, low, by=-30)
    syn.stray(s, high, by=+25)
    runs = load_runs(s.root)
    assert not runs["failed"].any()  # a run that scored well did train: nothing is dropped
    flagged = runs[runs["flagged"]].set_index("run_id")["flags"]
    assert set(flagged.index) == {low, high}
    assert "seed 2 below its siblings" in flagged[low][0] and "seed 1 above its siblings" in flagged[high][0]
    table = cells(runs)
    for side, run_id in (("clean", low), ("all", high)):
        cell = table[table["side"] == side].iloc[0]
        kept = runs[runs["run_id"].isin(cell["run_ids"])]
        assert cell["n_seeds"] == 4 and cell["f1"] == pytest.approx(kept["test_f1_weighted"].mean())
        assert cell["f1_without_stray"] == pytest.approx(kept[kept["run_id"] != run_id]["test_f1_weighted"].mean())
        assert cell["value_flagged"] and not cell["value_failed"]


def _synthetic(values: dict, std=0.5, seeds=3):  # noqa: D103 - cells with chosen F1 values, seeds around them
    rows = []
    for i, ((side, level), f1) in enumerate(values.items()):
        noise = np.random.default_rng(i).normal(size=seeds)
        noise = (noise - noise.mean()) / (noise.std(ddof=1) if seeds > 1 else 1) * std  # mean f1, sd std exactly
        per_seed = {s: float(f1 + (noise[s] if seeds > 1 else 0.0)) for s in range(seeds)}
        rows.append({"model": "m", "dataset": "d", "side": side, "level": level, "method": "reinit", "f1": f1,
                     "f1_std": std if seeds > 1 else 0.0, "n_seeds": seeds, "per_seed": per_seed, "n_failures": 0,
                     "failures": [], "surprises": [], "pooling": "cls", "mode": "full", "probe_f1": 50.0})
    return pd.DataFrame(rows)


def test_claims_are_judged_not_assumed():
    paper_like = _synthetic({("clean", 0): 90, ("bottom", .25): 80, ("top", .25): 88, ("bottom", .5): 70,
                             ("top", .5): 85, ("all", 1.0): 60})
    verdicts = dict(zip(claims(paper_like)["claim"], claims(paper_like)["verdict"]))
    assert set(verdicts.values()) == {"holds"}
    contrary = _synthetic({("clean", 0): 90, ("bottom", .25): 91, ("top", .25): 80, ("bottom", .5): 92,
                           ("top", .5): 70, ("all", 1.0): 60})
    verdicts = dict(zip(claims(contrary)["claim"], claims(contrary)["verdict"]))
    assert verdicts["bottom corruption hurts more than top"] == "not supported"
    assert verdicts["corrupted models never fully recover"] == "mixed"  # top and all below clean; bottom is not
    flat = _synthetic({("clean", 0): 80, ("bottom", .25): 80, ("top", .25): 80, ("bottom", .5): 80,
                       ("top", .5): 80, ("all", 1.0): 80}, std=1.0)
    verdicts = dict(zip(claims(flat)["claim"], claims(flat)["verdict"]))
    assert verdicts["more corruption, worse"] == "not supported"  # a flat line is no trend (it "held" before)
    one_seed = _synthetic({("clean", 0): 90, ("bottom", .25): 89.99, ("top", .25): 89.99, ("all", 1.0): 60}, seeds=1)
    judged = claims(one_seed).set_index("claim")
    assert (judged["verdict"] == "not testable (n = 1)").all()  # a deficit of 0.01 with one seed "held" before
    assert "raw direction" in judged.loc["corrupted models never fully recover", "evidence"]


def test_claims_and_table1_keep_two_schedules_apart():
    """A store may hold the same model and dataset at 6 and at 16 epochs: each schedule is judged on its own
    cells (one clean reference each), and Table 1 gives each its own rows instead of one overwriting the other."""
    short = _synthetic({("clean", 0): 78, ("top", .25): 80, ("bottom", .25): 70}).assign(epochs=6)
    long = _synthetic({("clean", 0): 88, ("top", .25): 85, ("bottom", .25): 80}).assign(epochs=16)
    both = pd.concat([short, long], ignore_index=True)
    verdicts = claims(both)
    recover = verdicts[verdicts["claim"] == "corrupted models never fully recover"].set_index("model")["verdict"]
    assert recover.to_dict() == {"m [6 epochs]": "mixed", "m [16 epochs]": "holds"}
    md = export_table1(both, "markdown")
    assert "| m [16 epochs] | 25 | 80.00 ± 0.50 | **85.00 ± 0.50** |" in md
    assert "| m [6 epochs] | 25 | 70.00 ± 0.50 | **80.00 ± 0.50** |" in md
    # one schedule alone: no label, as before
    assert set(claims(long)["model"]) == {"m"}


def test_a_cell_off_its_neighbours_trend_is_a_surprise_not_a_failure():
    t = _synthetic({("clean", 0): 90, ("bottom", .25): 88, ("bottom", .5): 30, ("bottom", .75): 84,
                    ("all", 1.0): 80})
    surprises = cell_surprises(t, line_keys(t))
    odd = [t.iloc[i]["level"] for i, s in enumerate(surprises) if any(x.startswith("off trend") for x in s)]
    assert odd == [0.5]
    assert t["n_failures"].sum() == 0


def test_a_three_level_grid_reports_a_dip_below_all_layers_as_non_monotone_not_off_trend():
    """Clean, 2 layers, all: a bottom-2 score below the all-layers score is a finding about the model (the
    cell is non-monotone), not a cell judged against the line from clean to all."""
    t = _synthetic({("clean", 0): 90, ("bottom", 2 / 6): 55, ("top", 2 / 6): 85, ("all", 1.0): 62})
    surprises = dict(zip(zip(t["side"], t["level"]), cell_surprises(t, line_keys(t))))
    assert surprises[("bottom", 2 / 6)] == ["non-monotone: bottom 33% 55.00 below all (100%) 62.00 with more "
                                            "corruption"]
    assert surprises[("all", 1.0)] == [] and surprises[("top", 2 / 6)] == [] and surprises[("clean", 0)] == []
    assert t["n_failures"].sum() == 0  # a finding, never a convergence failure


def test_significance_pairs_over_seeds(store):
    runs = load_runs(store.root)
    tests = bottom_vs_top_tests(runs, cells(runs))
    seeds = tests[tests["paired_over"].str.startswith("seeds")]
    assert set(seeds["n"]) == {3} and len(seeds) == 2 and seeds["p_value"].between(0, 1).all()


def test_table1_exports_in_three_formats(store):
    table = cells(load_runs(store.root))
    md = export_table1(table, "markdown", caption="Adam, learning-rate schedule: constant; 2 epochs.")
    lines = md.splitlines()
    assert lines[0].startswith("| model | level % | sst2 bottom | sst2 top |")
    assert len([l for l in lines if l.startswith("| ") and "---" not in l]) == 1 + 4  # header + 0/25/50/100
    assert "Adam, learning-rate schedule: constant" in md
    tex = export_table1(table, "latex", caption="Adam, constant")
    assert "\\begin{tabular}" in tex and "Bottom & Top" in tex and "\\caption{Adam, constant}" in tex
    csv = export_table1(table, "csv")
    assert csv.splitlines()[0] == "model,level %,sst2 bottom,sst2 top"


def test_table1_marks_the_higher_side_failures_and_surprises():
    t = _synthetic({("clean", 0): 90, ("bottom", .25): 80, ("top", .25): 88, ("all", 1.0): 17})
    t["n_layers"] = 0
    full = t.index[t["side"] == "all"][0]
    t.at[full, "n_failures"] = 2
    top = t.index[t["side"] == "top"][0]
    t.at[top, "surprises"] = ["non-monotone: ..."]
    md = export_table1(t, "markdown")
    row25 = next(l for l in md.splitlines() if l.startswith("| m | 25 |"))
    assert row25 == "| m | 25 | 80.00 ± 0.50 | **88.00 ± 0.50** ‡ |"
    row100 = next(l for l in md.splitlines() if l.startswith("| m | 100 |"))
    assert row100.count("†2") == 2  # both panels show the all-layers cell
    assert "\\textbf{88.00 $\\pm$ 0.50}" in export_table1(t, "latex")


@pytest.mark.integration  # starts processes
def test_results_do_not_import_torch(store):
    code = ("import sys; from healcore.results import load_runs, cells; cells(load_runs(sys.argv[1])); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    proc = subprocess.run([sys.executable, "-c", code, str(store.root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_report_is_generated_from_a_store_of_real_runs(tiny_store, tmp_path):
    from healcore import cli

    assert cli.main(["--store", str(tiny_store), "report", "--out", str(tmp_path), "--command", "healcore report"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "19 completed runs" in text and "## The paper's claims" in text and "| model | level % |" in text
    # only the clean cell ran a second learning rate: the set-up names the 5 cells that chose among fewer
    fewer = next(line for line in text.splitlines() if line.startswith("- Fewer learning rates"))
    assert "in 5 of 6 cells" in fewer and "bottom 25%" in fewer and "clean" not in fewer, fewer
    assert "learning-rate schedule: constant" in text
    for fig in ("report-curves.png", "report-tsne.png"):
        data = (tmp_path / "figures" / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_uses_the_runs_that_kept_features_and_names_the_hardware(store, tmp_path):
    """A store whose seed-0 runs lost their features (say, copied back without them) still gets its t-SNE
    figure, from the next seed, and the set-up names the hardware the runs recorded."""
    import shutil

    from healcore import cli

    for run_id in store.run_ids():
        if store.config(run_id)["seed"] == 0:
            shutil.rmtree(store.files(run_id).dir / "features")
    assert cli.main(["--store", str(store.root), "report", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## t-SNE of [CLS] features" in text and (tmp_path / "out" / "figures" / "report-tsne.png").is_file()
    assert "- Hardware (from the runs): CPU: synthetic (2 threads): 19 runs" in text


def test_report_keeps_two_models_apart(tmp_path):
    """A store with a second model (as the study's minilm-l3 beside minilm-l6): each table keeps its rows
    per model, the variants compare a model's variants with that model's own cells only, and the t-SNE
    figure shows one model (the one with more settings that kept features)."""
    import re

    from healcore import cli

    s = syn.build(tmp_path / "runs", models=(("big", 6), ("twin", 3)), levels=(0, 1, 3, 6), features=True)
    for run_id in s.run_ids():  # the twin is much weaker
        if s.config(run_id)["model"] == "twin":
            syn.stray(s, run_id, by=-60)
    syn.build(tmp_path / "runs", models=(("big", 6),), levels=(0, 1, 3, 6), base={"pooling": "mean"})
    assert cli.main(["--store", str(s.root), "report", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "REPORT.md").read_text()
    healing = text.split("### Damage and healing")[1].split("##")[0]
    assert "| twin | sst2 |" in healing and "| big | sst2 |" in healing
    variants = text.split("## Variants")[1].split("\n## ")[0]
    rows = [line for line in variants.splitlines() if line.startswith("| big ")]
    assert rows and "twin" not in variants
    table = cells(load_runs(s.root))
    own = table[(table["model"] == "big") & (table["pooling"] == "cls")]
    expected = {setting_label(r.side, r.level): f"{r.f1:.2f}" for r in own.itertuples()}
    # columns: model, dataset, setting, cls / full, mean / full; an average with the twin's cells would differ
    assert {r.split("|")[3].strip(): r.split("|")[4].strip() for r in rows} == expected
    tsne = text.split("## t-SNE")[1].split("\n## ")[0]  # the t-SNE section alone
    assert "twin" not in tsne and (tmp_path / "out" / "figures" / "report-tsne.png").is_file()
    assert re.search(r"Models: .*twin", text)


def test_plateau_tells_a_finished_curve_from_a_rising_one():
    from healcore.results.cell_table import plateau

    table = pd.DataFrame([{"model": "m", "dataset": d, "side": "clean", "lr": 5e-5, "n_seeds": 2,
                           "run_ids": [f"{d}-0", f"{d}-1"]} for d in ("flat", "rising")]
                         + [{"model": "m", "dataset": "flat", "side": "top", "lr": 5e-5, "n_seeds": 1,
                             "run_ids": ["other"]}])
    curves = {"flat": [70, 80, 85, 85.5, 85.2, 85.4], "rising": [40, 50, 60, 70, 75, 80]}
    epochs = pd.DataFrame([{"run_id": f"{d}-{s}", "epoch": e + 1, "validation_f1_weighted": v + s}
                           for d, vals in curves.items() for s in (0, 1) for e, v in enumerate(vals)])
    out = plateau(table, epochs).set_index("dataset")
    assert list(out.index) == ["flat", "rising"]  # one row per clean cell, the top cell ignored
    assert out.loc["flat", "verdict"] == "plateaued" and out.loc["rising", "verdict"] == "still rising"
    assert out.loc["rising", "last-third gain"] == 80 - 70  # epochs 5-6 against the best of 1-4
    assert out.loc["rising", "best epoch"] == 6
    assert out.loc["flat", "validation F1 by epoch"].startswith("70.5 80.5 85.5 86.0")  # mean over the 2 seeds


# ------------------------------------------------------------------------------------------ damaged stores
def test_a_damaged_run_is_listed_and_breaks_nothing(tmp_path):
    """A truncated summary, a garbage status.json and a torn metrics.jsonl: status, report and the tables go on,
    and each damaged run is listed with the file and the reason."""
    from healcore import cli
    from healcore.grids.launch import store_status
    from healcore.store.runs import RunStore

    s = syn.build(tmp_path / "runs", levels=(0, 1, 6), seeds=(0, 1))
    ids = s.run_ids()
    syn.damage(s, ids[0], "summary")
    s.files(ids[1]).status.write_text("{garbage")
    with open(s.files(ids[2]).metrics, "a") as f:
        f.write('{"epoch": 4, "train_loss": 0.1, "te')
    runs = load_runs(s.root)
    damaged = runs.set_index("run_id")["damaged"]
    assert damaged[ids[0]][0].startswith("summary.json: not valid JSON")
    assert damaged[ids[1]][0].startswith("status.json: not valid JSON")
    assert [e["epoch"] for e in RunStore(s.root).epochs(ids[2])] == [1, 2, 3]  # the torn line is skipped
    cells(runs)  # no "all NA" error from the damaged run
    status = store_status(RunStore(s.root))
    listed = {a["run_id"]: a["damaged"] for a in status["attention"]}
    assert listed[ids[0]] and listed[ids[1]]
    assert cli.main(["--store", str(s.root), "status"]) == 0
    assert cli.main(["--store", str(s.root), "report", "--out", str(tmp_path / "out")]) == 0
    assert "damaged: summary.json" in (tmp_path / "out" / "REPORT.md").read_text()


def test_a_completed_run_with_a_damaged_summary_is_planned_again(tmp_path):
    from healcore.grids.plan import plan
    from healcore.grids.spec import Grid

    s = syn.build(tmp_path / "runs", levels=(0,), seeds=(0,), lrs=(5e-5,))
    run_id = s.run_ids()[0]
    cfg = RunConfig.from_stored(s.config(run_id))
    assert [c.run_id for c in plan(Grid("g", [cfg]), s)["completed"]] == [run_id]
    syn.damage(s, run_id, "summary")
    assert [c.run_id for c in plan(Grid("g", [cfg]), s)["todo"]] == [run_id]
    assert json.loads(s.files(run_id).status.read_text())["state"] == "completed"  # nothing rewritten by reading
