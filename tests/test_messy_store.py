"""A store of many experiments with noisy seeds, as a user's store is after a week: the demo, a mean-pooling grid, a
second schedule in both poolings, a 10-epoch check, AG News at other epochs and caps, the user's own data with two
label columns (one of them spelled two ways) and an experiment with no partner; two learning rates whose best
differs between the sides.

What every comparison must show is computed here from the run folders' own files (config.json, summary.json,
status.json), not through healcore.results; then the CLI, the report, Export and the pages are held to it."""
import io
import json
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from healcore.core.config import RunConfig
from healcore.results import synthetic as syn

from conftest import ROOT

pytestmark = pytest.mark.unit

L = 6
LEVELS = {"clean": "none", "bottom 50%": "bottom:3", "top 50%": "top:3", "all": "bottom:6"}
OWN = "/data/reviews"  # the user's own folder (its rows are never read: the runs are synthetic)


def _experiments():
    """(settings, the levels it ran, seeds, {lr: shift}): the grids a week of use leaves behind."""
    both_lrs_cls = {2e-5: -3.0, 5e-5: 0.0}  # cls prefers 5e-5 ...
    both_lrs_mean = {2e-5: 0.0, 5e-5: -4.0}  # ... mean pooling prefers 2e-5: the kept rates differ between sides
    return [
        ({"dataset": "sst2"}, list(LEVELS), (0, 1, 2), both_lrs_cls),  # the demo
        ({"dataset": "sst2", "pooling": "mean"}, list(LEVELS), (0, 1, 2), both_lrs_mean),  # a mean-pooling grid
        ({"dataset": "sst2", "lr_schedule": "linear"}, ["clean", "bottom 50%"], (0, 1, 2), {5e-5: 0.0}),
        ({"dataset": "sst2", "lr_schedule": "linear", "pooling": "mean"}, ["clean", "bottom 50%"], (0, 1, 2),
         {5e-5: 0.0}),
        ({"dataset": "sst2", "epochs": 10}, ["clean", "bottom 50%"], (0, 1), {5e-5: 0.0}),  # a 10-epoch check
        ({"dataset": "ag_news", "epochs": 2, "max_train": 500}, ["clean", "bottom 50%"], (0, 1, 2), {5e-5: 0.0}),
        ({"dataset": OWN, "label_column": "stars"}, ["clean", "bottom 50%"], (0, 1, 2), {5e-5: 0.0}),
        ({"dataset": OWN, "label_column": "sentiment"}, ["clean", "bottom 50%"], (0, 1, 2), {5e-5: 0.0}),
        ({"dataset": OWN, "label_column": "sentiment", "pooling": "mean"}, ["clean", "bottom 50%"], (0, 1, 2),
         {5e-5: 0.0}),
        ({"dataset": "sst2", "max_length": 64, "batch_size": 16}, ["clean"], (0, 1), {5e-5: 0.0}),  # no partner
    ]


def build_messy(root):
    store = syn.RunStore(root)
    store.ensure()
    rng = np.random.default_rng(30)
    for e, (settings, levels, seeds, lrs) in enumerate(_experiments()):
        base = 90.0 - 2.0 * e  # every experiment at its own height: a mixed row cannot pass by accident
        for level in levels:
            drop = {"clean": 0, "bottom 50%": 20, "top 50%": 9, "all": 45}[level]
            for lr, shift in lrs.items():
                for seed in seeds:
                    values = {**settings, "corrupt": LEVELS[level], "lr": lr, "seed": seed, "epochs":
                              settings.get("epochs", 3)}
                    recorded = None
                    if settings.get("label_column") == "stars" and seed == 2:
                        # the same experiment spelled another way: the text column named, where a blank one finds
                        # it; the run recorded that both spell one experiment (sources.canonical)
                        values["text_column"] = "review"
                        recorded = {"text_column": "", "text_pair_column": "", "label_column": "stars",
                                    "train_split": "", "test_split": ""}
                    cfg = RunConfig.from_dict(values)
                    f1 = base - drop + shift + float(rng.normal(0, 1.5))
                    syn.write_run(store, cfg, f1, L, ["neg", "pos"], rng, data_options=recorded,
                                  validation_f1=f1 + float(rng.normal(0, 0.3)))
    return store


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return build_messy(tmp_path_factory.mktemp("messy") / "runs")


# ------------------------------------------------------------------------------------------ the expected cells
EXPERIMENT_KEYS = ("model", "dataset", "mode", "pooling", "epochs", "batch_size", "max_length", "lr_schedule",
                   "max_train", "max_test", "label_column", "method")


def expected_cells(root) -> dict[tuple, dict]:
    """(experiment settings..., setting) -> {value, n, lr}: each cell at the learning rate with the best mean
    validation score, its value the mean test F1 over that rate's seeds. From the run folders alone."""
    runs = defaultdict(list)
    for folder in sorted(p for p in root.iterdir() if (p / "summary.json").is_file()):
        config = json.loads((folder / "config.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        layers = summary["corruption"]["layers"]
        setting = ("clean" if not layers else "all" if len(layers) == L else
                   ("bottom 50%" if layers[0] == 1 else "top 50%"))
        key = tuple(config[k] for k in EXPERIMENT_KEYS) + (setting,)
        runs[key].append((config["lr"], config["seed"], summary["best"]["validation"]["f1_weighted"],
                          summary["best"]["test"]["f1_weighted"]))
    out = {}
    for key, rows in runs.items():
        by_lr = defaultdict(list)
        for lr, seed, val, test in rows:
            by_lr[lr].append((seed, val, test))
        lr = max(by_lr, key=lambda x: np.mean([v for _, v, _ in by_lr[x]]))
        seeds = {s: t for s, _, t in by_lr[lr]}
        out[key] = {"value": float(np.mean(list(seeds.values()))), "n": len(seeds), "lr": lr, "seeds": seeds}
    return out


def expected_delta(va: dict, vb: dict) -> float:
    """A − B as the comparison must show it: over the paired seeds where 2 or more pair but not all (the ones
    tested), else the difference of the means."""
    common = sorted(set(va["seeds"]) & set(vb["seeds"]))
    if 2 <= len(common) < max(len(va["seeds"]), len(vb["seeds"])):
        return float(np.mean([va["seeds"][s] - vb["seeds"][s] for s in common]))
    return va["value"] - vb["value"]


def expected_comparison(cells: dict, key: str, a, b) -> tuple[list, list, list]:
    """(pairs (A, B), only in A, only in B) of comparing `key` = a against b: partners agree on every other key."""
    i = EXPERIMENT_KEYS.index(key)

    def rest(k):
        return k[:i] + k[i + 1:]

    side_a = {rest(k): v for k, v in cells.items() if k[i] == a}
    side_b = {rest(k): v for k, v in cells.items() if k[i] == b}
    pairs = [(k, side_a[k], side_b[k]) for k in side_a if k in side_b]
    return pairs, [(k, v) for k, v in side_a.items() if k not in side_b], \
        [(k, v) for k, v in side_b.items() if k not in side_a]


COMPARED = [("pooling", "cls", "mean"), ("lr_schedule", "constant", "linear"), ("epochs", 3, 10),
            ("label_column", "sentiment", "stars")]


def _tidy(root, key, a, b) -> pd.DataFrame:
    from healcore.results.compare_command import run_compare

    return pd.read_csv(io.StringIO(run_compare(str(root), by=key, a=str(a), b=str(b), style="tidy")))


# ------------------------------------------------------------------------------------------ the tests
def test_the_fixture_is_what_it_claims(messy):
    cells = expected_cells(messy.root)
    stars = [v for k, v in cells.items() if k[EXPERIMENT_KEYS.index("label_column")] == "stars"]
    assert stars and all(v["n"] == 3 for v in stars)  # the two spellings are one experiment's three seeds
    demo = cells[("minilm-l6", "sst2", "full", "cls", 3, 32, 128, "constant", 0, 0, "", "reinit", "clean")]
    mean = cells[("minilm-l6", "sst2", "full", "mean", 3, 32, 128, "constant", 0, 0, "", "reinit", "clean")]
    assert demo["lr"] == 5e-5 and mean["lr"] == 2e-5  # the kept learning rates differ between the sides


@pytest.mark.parametrize("key,a,b", COMPARED)
def test_every_expected_cell_and_no_mixed_row_in_healcore_compare(messy, key, a, b):
    cells = expected_cells(messy.root)
    pairs, only_a, only_b = expected_comparison(cells, key, a, b)
    assert pairs, "the fixture must pair every compared key"
    tidy = _tidy(messy.root, key, a, b)
    assert len(tidy) == len(pairs) + len(only_a) + len(only_b)  # one row per aligned cell, none merged or lost
    measured = tidy[tidy["status"].isna() | (tidy["status"] == "")]
    for _, va, vb in pairs:
        hit = measured[np.isclose(measured["a_value"], va["value"], atol=1e-6)
                       & np.isclose(measured["b_value"], vb["value"], atol=1e-6)]
        assert len(hit) == 1, (key, va, vb)
        row = hit.iloc[0]
        assert row["a_n"] == va["n"] and row["b_n"] == vb["n"]
        assert np.isclose(row["delta"], expected_delta(va, vb))
        assert str(row["a_lr"]) != "–" and float(row["a_lr"]) == va["lr"] and float(row["b_lr"]) == vb["lr"]
    for which, expected in (("A", only_a), ("B", only_b)):
        rows = tidy[tidy["status"] == f"only in {which}"]
        column = f"{which.lower()}_value"
        assert sorted(np.round(rows[column], 6)) == sorted(round(v["value"], 6) for _, v in expected)
    assert {"p", "p_adj", "test", "a_std", "b_std"} <= set(tidy.columns)
    assert measured["p"].notna().any()  # seeds pair: the tidy export carries the p-values


@pytest.mark.parametrize("key,a,b", COMPARED)
def test_each_markdown_row_holds_one_experiment(messy, key, a, b):
    from healcore.results.compare_command import run_compare

    cells = expected_cells(messy.root)
    pairs, only_a, _ = expected_comparison(cells, key, a, b)
    experiment_of = defaultdict(set)  # an A value as printed -> the experiments with a cell of that value
    for k, va, _ in pairs:
        experiment_of[f"{va['value']:.2f}"].add(k[:-1])
    for k, va in only_a:
        experiment_of[f"{va['value']:.2f}"].add(k[:-1])
    md = run_compare(str(messy.root), by=key, a=str(a), b=str(b), style="md")
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows
    for line in rows:
        values = [cell.split(" / ")[0].strip() for cell in line.strip("|").split("|")[3:] if " / " in cell]
        owners = [experiment_of[v] for v in values if v != "–"]
        assert owners and set.intersection(*owners), f"a row mixes experiments: {line}"
    for _, va, vb in pairs:  # and every expected triple is printed
        assert f"{va['value']:.2f} / {vb['value']:.2f} / {expected_delta(va, vb):+.2f}" in md


def test_only_keys_that_pair_are_offered_and_every_offered_pair_compares(messy):
    from healcore.results import cells, load_runs
    from healcore.results import compare as cmp
    from healcore.results.compare_command import run_compare

    table = cells(load_runs(messy.root))
    offered = cmp.comparable_keys(table)
    assert {"pooling", "lr_schedule", "epochs", "label_column"} <= set(offered)
    # varying only with the dataset (caps), or one spelling of the same columns: nothing to compare
    assert not {"max_train", "max_test", "text_column", "max_length", "batch_size"} & set(offered)
    for key in offered:
        for a, partners in cmp.pairings(table, key).items():
            for b in partners:
                assert run_compare(str(messy.root), by=key, a=a, b=b, style="csv")
    with pytest.raises(Exception, match="varies only together with dataset"):
        run_compare(str(messy.root), by="max_train")
    with pytest.raises(Exception, match="'max_length' varies only together with batch_size"):
        run_compare(str(messy.root), by="max_length")
    with pytest.raises(Exception, match="corrupt places a cell on its line.*compare by a setting"):
        run_compare(str(messy.root), by="corrupt")


def test_rows_are_labelled_in_words(messy):
    from healcore.results.compare_command import run_compare

    md = run_compare(str(messy.root), by="pooling", a="cls", b="mean", style="md")
    assert "| experiment |" in md.splitlines()[0]
    assert "linear schedule" in md and "label column stars" in md
    assert "text_column" not in md and "max_train 0" not in md


def test_the_report_holds_every_expected_triple_and_no_raw_key_names(messy, tmp_path):
    from healcore.results.report import write_report

    out = write_report(str(messy.root), str(tmp_path / "report"))
    text = out.read_text() if out.is_file() else (out / "REPORT.md").read_text()
    cells = expected_cells(messy.root)
    for key, a, b in COMPARED:
        pairs, _, _ = expected_comparison(cells, key, a, b)
        for _, va, vb in pairs:
            assert f"{va['value']:.2f} / {vb['value']:.2f} / {expected_delta(va, vb):+.2f}" in text, (key, va, vb)
    assert "text_column ," not in text and "label_column ," not in text and "max_train 0" not in text


@pytest.mark.integration  # starts processes
def test_the_cli_prints_the_tidy_table(messy):
    out = subprocess.run([sys.executable, "-m", "healcore", "--store", str(messy.root), "compare", "--by",
                          "label_column", "--format", "tidy"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    tidy = pd.read_csv(io.StringIO(out.stdout))
    assert list(tidy.columns[:3]) == ["model", "dataset", "mode"] or "label_column" not in tidy.columns
    assert {"a_value", "b_value", "a_n", "b_n", "a_std", "b_std", "delta", "test", "p", "p_adj"} <= set(tidy.columns)


def test_two_spellings_of_the_data_options_are_one_run(tmp_path):
    """A grid naming text_column=review reuses the run whose blank text column found review, and the reverse."""
    from healcore.grids.plan import as_stored

    data = tmp_path / "reviews"
    data.mkdir()
    rows = pd.DataFrame({"review": ["good film", "bad film"] * 10, "label": [1, 0] * 10})
    rows.to_csv(data / "train.csv", index=False)
    rows.to_csv(data / "test.csv", index=False)
    from healcore.core.data import canonical_options

    blank = RunConfig(dataset=str(data), corrupt="none")
    named = blank.replace(text_column="review")
    assert canonical_options(named) == canonical_options(blank) == {k: "" for k in canonical_options(blank)}
    assert named.run_id != blank.run_id  # the ids stay as they were ...
    store = syn.RunStore(tmp_path / "runs")
    store.ensure()
    syn.write_run(store, blank, 80.0, L, ["0", "1"], np.random.default_rng(0))
    assert as_stored(named, store).run_id == blank.run_id  # ... and the stored run stands in for the new spelling
    other = blank.replace(text_column="label", label_column="review")  # another meaning: not the same run
    assert canonical_options(other)["text_column"] == "label"
    assert as_stored(other, store).run_id == other.run_id


def test_a_grid_record_of_another_format_is_named_not_raised(messy, tmp_path):
    import shutil

    from healcore.grids.launch import status_lines, store_status
    from healcore.results import load_runs

    root = tmp_path / "runs"
    shutil.copytree(messy.root, root)
    (root / ".grids").mkdir(exist_ok=True)
    (root / ".grids" / "old.json").write_text(json.dumps({"name": "old", "state": "running", "pid": 1,
                                                          "runs": ["a", "b"], "configs": ["a", "b"]}))
    assert len(load_runs(root))  # no AttributeError
    lines = "\n".join(status_lines(store_status(syn.RunStore(root))))
    assert "grid old: damaged: grid record old.json: its 'configs' is a list, not a dict" in lines


@pytest.mark.parametrize("page", ["Grid heatmaps", "Degradation curves", "Export"])
def test_every_offered_key_compares_on_the_pages(messy, monkeypatch, page):
    from healcore.results import cells, load_runs
    from healcore.results import compare as cmp

    from pages_helpers import open_page, texts

    monkeypatch.setenv("HEALCORE_RUNS", str(messy.root))
    offered = cmp.comparable_keys(cells(load_runs(messy.root)))
    for key in offered:
        at = open_page(page, {"by": key})
        assert not at.exception, (page, key, at.exception)
        assert not at.error, (page, key, [e.value for e in at.error])
        box = next(s for s in at.selectbox if s.label == "Compare by")
        assert set(box.options) >= set(offered) and "max_train" not in box.options
        if page == "Export":  # the whole selection, a row per experiment, as the CLI prints it
            shown = at.dataframe[-1].value
            assert "experiment" in shown.columns or key in ("label_column",), (key, list(shown.columns))
    assert "Choose an option" not in texts(at)


def test_the_cost_estimate_reads_the_column_each_run_reads(tmp_path):
    """Two runs that differ only in their text column are priced from their own texts (they shared one estimate)."""
    from healcore.grids.plan import estimate_seconds

    data = tmp_path / "two-texts"
    data.mkdir()
    rows = pd.DataFrame({"short": ["ok", "no"] * 30, "long": ["a much longer review of the film " * 4] * 60,
                         "label": [0, 1] * 30})
    rows.to_csv(data / "train.csv", index=False)
    rows.to_csv(data / "test.csv", index=False)
    store = syn.RunStore(tmp_path / "runs")
    short = RunConfig(dataset=str(data), text_column="short", max_length=64)
    long = short.replace(text_column="long")
    s, _, _ = estimate_seconds([short, short], store)
    mixed, _, _ = estimate_seconds([short, long], store)
    assert mixed > 1.2 * s  # the long texts cost more (they were priced as the short ones: equal totals)
