"""Tidy tables, cells, flags, claims and exports from a store of real tiny runs."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd

from healcore.results import (bottom_vs_top_tests, cells, claims, export_table1, load_epochs, load_runs,
                              run_flags)


def test_runs_table_has_levels_sides_and_metrics(tiny_store):
    runs = load_runs(tiny_store)
    assert len(runs) == 19 and set(runs["state"]) == {"completed"}
    assert set(runs["side"]) == {"clean", "bottom", "top", "all"}
    assert set(np.round(runs["level"], 2)) == {0.0, 0.25, 0.5, 1.0}
    assert runs["test_f1_weighted"].between(0, 100).all() and runs["probe_f1"].notna().all()
    epochs = load_epochs(tiny_store)
    assert len(epochs) == 19 * 2 and epochs["validation_f1_weighted"].notna().all()


def test_cells_keep_the_best_lr_and_average_seeds(tiny_store):
    runs = load_runs(tiny_store)
    table = cells(runs)
    assert len(table) == 6 and (table["n_seeds"] == 3).all()
    clean = table[table["side"] == "clean"].iloc[0]
    assert clean["lrs_tried"] == 2
    clean_runs = runs[(runs["side"] == "clean") & (runs["lr"] == clean["lr"])]
    assert clean["f1"] == clean_runs["test_f1_weighted"].mean()
    other = runs[(runs["side"] == "clean") & (runs["lr"] != clean["lr"])]
    assert clean_runs["vali_f1_weighted"].mean() >= other["vali_f1_weighted"].mean()


def test_recovery_ratio_is_relative_to_clean_and_all():
    from healcore.results import _recovery

    t = _synthetic({("clean", 0): 90, ("bottom", .5): 75, ("all", 1.0): 60})
    assert list(_recovery(t)) == [1.0, 0.5, 0.0]
    assert _recovery(_synthetic({("clean", 0): 60, ("all", 1.0): 60})).isna().all()  # undefined, not 0/0


def test_flags_catch_collapse_divergence_and_flat_loss():
    r = {"state": "completed", "test_f1_weighted": 16.98, "majority_f1": 16.98, "first_loss": 1.7,
         "final_loss": 1.75, "epochs": 10}
    flags = run_flags(r)
    assert any("collapsed" in f for f in flags) and any("loss not decreasing" in f for f in flags)
    assert run_flags({"state": "failed", "error": "training loss became nan at epoch 2"}) == ["diverged (NaN/inf loss)"]
    assert run_flags({"state": "completed", "test_f1_weighted": 90.0, "majority_f1": 33.0, "first_loss": 1.0,
                      "final_loss": 0.2, "epochs": 3}) == []


def _synthetic(values: dict, std=0.5):  # noqa: D103 - cells with chosen F1 values
    rows = []
    for (side, level), f1 in values.items():
        rows.append({"model": "m", "dataset": "d", "side": side, "level": level, "method": "reinit", "f1": f1,
                     "f1_std": std, "flags": [], "flagged": False, "pooling": "cls", "mode": "full"})
    return pd.DataFrame(rows)


def test_claims_are_judged_not_assumed():
    paper_like = _synthetic({("clean", 0): 90, ("bottom", .25): 80, ("top", .25): 88, ("bottom", .5): 70,
                             ("top", .5): 85, ("all", 1.0): 60})
    verdicts = dict(zip(claims(paper_like)["claim"], claims(paper_like)["verdict"]))
    assert set(verdicts.values()) == {"holds"}
    contrary = _synthetic({("clean", 0): 90, ("bottom", .25): 91, ("top", .25): 80, ("bottom", .5): 92,
                           ("top", .5): 70, ("all", 1.0): 60})
    verdicts = dict(zip(claims(contrary)["claim"], claims(contrary)["verdict"]))
    assert verdicts["bottom corruption hurts more than top"] == "fails"
    assert verdicts["corrupted models never fully recover"] == "mixed"
    assert verdicts["more corruption, worse"] == "mixed"


def test_claims_and_table1_keep_two_schedules_apart():
    """A store may hold the same model and dataset at 6 and at 16 epochs: each schedule is judged on its own
    cells (one clean reference each), and Table 1 gives each its own rows instead of one overwriting the other."""
    short = _synthetic({("clean", 0): 78, ("top", .25): 80, ("bottom", .25): 70}).assign(epochs=6)
    long = _synthetic({("clean", 0): 88, ("top", .25): 85, ("bottom", .25): 80}).assign(epochs=16)
    both = pd.concat([short, long], ignore_index=True)
    verdicts = claims(both)
    recover = verdicts[verdicts["claim"] == "corrupted models never fully recover"].set_index("model")["verdict"]
    assert recover.to_dict() == {"m [epochs 6]": "mixed", "m [epochs 16]": "holds"}
    md = export_table1(both, "markdown")
    assert "| m [epochs 16] | 25 | 80.00 ± 0.50 | **85.00 ± 0.50** |" in md
    assert "| m [epochs 6] | 25 | 70.00 ± 0.50 | **80.00 ± 0.50** |" in md
    # one schedule alone: no label, as before
    assert set(claims(long)["model"]) == {"m"}


def test_trend_outlier_is_flagged():
    from healcore.results import _trend_flags

    t = _synthetic({("clean", 0): 90, ("bottom", .25): 88, ("bottom", .5): 30, ("bottom", .75): 84,
                    ("all", 1.0): 80})
    _trend_flags(t)
    flagged = t[t["flags"].map(bool)]
    assert list(flagged["level"]) == [0.5] and "off trend" in flagged.iloc[0]["flags"][0]


def test_significance_pairs_over_seeds(tiny_store):
    runs = load_runs(tiny_store)
    tests = bottom_vs_top_tests(runs, cells(runs))
    seeds = tests[tests["paired_over"].str.startswith("seeds")]
    assert set(seeds["n"]) == {3} and len(seeds) == 2 and seeds["p_value"].between(0, 1).all()


def test_table1_exports_in_three_formats(tiny_store):
    table = cells(load_runs(tiny_store))
    md = export_table1(table, "markdown")
    lines = md.splitlines()
    assert lines[0].startswith("| model | level % | sst2 bottom | sst2 top |")
    assert len([l for l in lines if l.startswith("| ") and "---" not in l]) == 1 + 4  # header + 0/25/50/100
    tex = export_table1(table, "latex")
    assert "\\begin{tabular}" in tex and "Bottom & Top" in tex
    csv = export_table1(table, "csv")
    assert csv.splitlines()[0] == "model,level %,sst2 bottom,sst2 top"


def test_table1_marks_the_higher_side_and_failures():
    t = _synthetic({("clean", 0): 90, ("bottom", .25): 80, ("top", .25): 88, ("all", 1.0): 17})
    t["n_layers"] = 0
    full = t.index[t["side"] == "all"][0]
    t.at[full, "flags"] = ["collapsed"]
    t.at[full, "flagged"] = True
    md = export_table1(t, "markdown")
    row25 = next(l for l in md.splitlines() if l.startswith("| m | 25 |"))
    assert row25 == "| m | 25 | 80.00 ± 0.50 | **88.00 ± 0.50** |"
    row100 = next(l for l in md.splitlines() if l.startswith("| m | 100 |"))
    assert row100.count("†") == 2
    assert "\\textbf{88.00 $\\pm$ 0.50}" in export_table1(t, "latex")


def test_results_do_not_import_torch(tiny_store):
    code = ("import sys; from healcore.results import load_runs, cells; cells(load_runs(sys.argv[1])); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_store)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_report_is_generated_from_the_store(tiny_store, tmp_path):
    from healcore import cli

    assert cli.main(["--store", str(tiny_store), "report", "--out", str(tmp_path), "--command", "healcore report"]) == 0
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert "19 completed runs" in text and "## The paper's claims" in text and "| model | level % |" in text
    # only the clean cell ran a second learning rate: the set-up names the 5 cells that chose among fewer
    fewer = next(line for line in text.splitlines() if line.startswith("- Fewer learning rates"))
    assert "in 5 of 6 cells" in fewer and "bottom 25%" in fewer and "clean" not in fewer, fewer
    for fig in ("reproduction-curves.png", "reproduction-tsne.png"):
        data = (tmp_path / "figures" / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_uses_the_runs_that_kept_features_and_names_the_hardware(tiny_store, tmp_path):
    """A store whose seed-0 runs lost their features (say, copied back without them) still gets its t-SNE
    figure, from the next seed, and the set-up names the hardware the runs recorded."""
    import shutil

    from healcore import cli

    store = tmp_path / "runs"
    shutil.copytree(tiny_store, store)
    for config in store.glob("*/config.json"):
        if json.loads(config.read_text())["seed"] == 0:
            shutil.rmtree(config.parent / "features")
    assert cli.main(["--store", str(store), "report", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "REPRODUCTION.md").read_text()
    assert "## t-SNE of [CLS] features" in text and (tmp_path / "out" / "figures" / "reproduction-tsne.png").is_file()
    assert "- Hardware (from the runs): CPU: " in text


def test_report_keeps_two_models_apart(tiny_store, tmp_path):
    """A store with a second model (as the study's minilm-l3 beside minilm-l6): each table keeps its rows
    per model, the variants compare a model's variants with that model's own cells only, and the t-SNE
    figure shows one model (the one with more settings that kept features)."""
    import re
    import shutil

    from healcore import cli

    store = tmp_path / "runs"
    shutil.copytree(tiny_store, store)
    original = json.loads(next(store.glob("*/config.json")).read_text())["model"]

    def twin(src, suffix, edit_config, score=None, features=True):
        dst = src.parent / f"{src.name}{suffix}"
        shutil.copytree(src, dst)
        if not features:
            shutil.rmtree(dst / "features", ignore_errors=True)
        config = json.loads((dst / "config.json").read_text())
        edit_config(config)
        (dst / "config.json").write_text(json.dumps(config))
        summary = json.loads((dst / "summary.json").read_text())
        summary["config"] = config
        if score is not None:
            summary["best"]["test"]["f1_weighted"] = score
        (dst / "summary.json").write_text(json.dumps(summary))

    runs = sorted(p for p in store.iterdir() if (p / "config.json").is_file())
    for i, run in enumerate(runs):  # a weaker second model scoring 1.0 everywhere; fewer runs kept features
        twin(run, "b", lambda c: c.update(model="twin"), score=1.0, features=i % 2 == 0)
    for run in runs:  # the first model's mean-pooling variant
        twin(run, "m", lambda c: c.update(pooling="mean"))
    assert cli.main(["--store", str(store), "report", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "REPRODUCTION.md").read_text()
    healing = text.split("### Damage and healing")[1].split("##")[0]
    assert "| model | dataset |" in healing and "| twin | sst2 |" in healing and f"| {original} | sst2 |" in healing
    variants = text.split("## Variants")[1].split("\n## ")[0]
    rows = [line for line in variants.splitlines() if line.startswith(f"| {original} ")]
    assert rows and "twin" not in variants
    from healcore.charts import setting_label

    table = cells(load_runs(store))
    own = table[(table["model"] == original) & (table["pooling"] == "cls")]
    expected = {setting_label(r.side, r.level): f"{r.f1:.2f}" for r in own.itertuples()}
    # columns: model, dataset, setting, cls / full, mean / full; an average with the twin's cells would differ
    assert {r.split("|")[3].strip(): r.split("|")[4].strip() for r in rows} == expected
    tsne = text.split("## t-SNE")[1]
    assert "twin" not in tsne and (tmp_path / "out" / "figures" / "reproduction-tsne.png").is_file()
    assert re.search(r"Models: .*twin", text)


def test_plateau_tells_a_finished_curve_from_a_rising_one():
    from healcore.results import plateau

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
    assert out.loc["rising", "last-third gain"] == 80 - 70  # epochs 5-6 against the best of 1-4 and out.loc["rising", "best epoch"] == 6
    assert out.loc["flat", "validation F1 by epoch"].startswith("70.5 80.5 85.5 86.0")  # mean over the 2 seeds
