"""Healing against training-set size, on a store of several experiments with noisy seeds: one setting at three
caps, removal at two, a restricted-training cell and a 10-epoch check at one cap only (no series), AG News at two
caps; two learning rates whose better one differs by cell. What the view must show is computed here from the run
folders' own files (config.json, summary.json), not through healcore.results; the table, the chart, the page and
the report are held to it."""
import json
from collections import defaultdict

import numpy as np
import pytest

from healcore.core.config import RunConfig
from healcore.results import synthetic as syn

pytestmark = pytest.mark.unit

L = 6
SETTINGS = {"clean (0%)": "none", "bottom 50%": "bottom:3", "top 50%": "top:3"}


def _plan():
    """(dataset, corruption settings, extra config, caps, seeds)."""
    return [("sst2", ["clean (0%)", "bottom 50%", "top 50%"], {}, (250, 500, 1000), (0, 1, 2)),
            ("sst2", ["bottom 50%"], {"method": "remove"}, (250, 1000), (0, 1, 2)),
            ("sst2", ["bottom 50%"], {"train_layers": "damaged"}, (500,), (0, 1)),
            ("sst2", ["clean (0%)", "bottom 50%"], {"epochs": 10}, (500,), (0, 1)),
            ("ag_news", ["clean (0%)", "bottom 50%"], {}, (500, 1000), (0, 1, 2))]


def build_sizes(root):
    store = syn.RunStore(root)
    store.ensure()
    rng = np.random.default_rng(7)
    for dataset, settings, extra, caps, seeds in _plan():
        for setting in settings:
            for cap in caps:
                for lr in (2e-5, 5e-5):
                    for seed in seeds:
                        cfg = RunConfig.from_dict({"dataset": dataset, "corrupt": SETTINGS[setting], "lr": lr,
                                                   "seed": seed, "max_train": cap, "epochs": 3, **extra})
                        drop = {"clean (0%)": 0, "bottom 50%": 18, "top 50%": 7}[setting] * (1000 / cap) ** 0.5
                        shift = rng.normal(0, 2.0)  # lr preference drawn per run: the kept rate differs by cell
                        f1 = 60 + 8 * np.log2(cap / 250) - drop + shift + rng.normal(0, 1.5)
                        syn.write_run(store, cfg, float(f1), L, syn.CLASSES[dataset], rng)
    return store


def expected_points(root) -> dict:
    """(dataset, series words, cap) -> (training rows, F1, std, deficit), from the folders' own files: the kept
    learning rate is the one with the best mean validation score over its seeds."""
    runs = defaultdict(lambda: defaultdict(list))
    for folder in sorted(p for p in root.iterdir() if (p / "summary.json").is_file()):
        config = json.loads((folder / "config.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        setting = next(name for name, spec in SETTINGS.items() if spec == config["corrupt"])
        words = setting
        if config["method"] != "reinit" and setting != "clean (0%)":
            words += f", {config['method']}"
        if config["train_layers"] != "all":
            words += f", {config['train_layers']} layers trained"
        series = (config["dataset"], config["epochs"], config["train_layers"], words)
        runs[(series, config["max_train"])][config["lr"]].append(
            (summary["best"]["validation"]["f1_weighted"], summary["best"]["test"]["f1_weighted"],
             summary["data"]["sizes"]["train"]))
    cells = {}
    for key, by_lr in runs.items():
        best = max(by_lr, key=lambda lr: np.mean([v for v, _, _ in by_lr[lr]]))
        tests = [t for _, t, _ in by_lr[best]]
        cells[key] = (by_lr[best][0][2], float(np.mean(tests)), float(np.std(tests, ddof=1)))
    sizes = defaultdict(set)
    for (series, cap) in cells:
        sizes[series].add(cap)
    out = {}
    for (series, cap), (rows, f1, std) in cells.items():
        if len(sizes[series]) < 2:
            continue
        dataset, epochs, train_layers, words = series
        clean = cells[((dataset, epochs, train_layers, "clean (0%)"), cap)][1]
        out[(dataset, words, cap)] = (rows, f1, std, clean - f1)
    return out


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes") / "runs"
    build_sizes(root)
    return root


def test_the_size_points_are_the_folders_numbers(sized):
    from healcore.results import cells, data_size, load_runs

    expected = expected_points(sized)
    points = data_size.size_points(cells(load_runs(sized)))
    got = {(r["dataset"], r["series"], r["max_train"]): (r["train_rows"], r["f1"], r["f1_std"], r["deficit"])
           for r in points.to_dict("records")}
    assert set(got) == set(expected)  # no single-cap setting, no 10-epoch cell, no mixed experiment
    assert len(expected) == 3 * 3 + 2 + 2 * 2
    for key, (rows, f1, std, deficit) in expected.items():
        assert got[key] == pytest.approx((rows, f1, std, deficit), abs=1e-9), key


def test_the_table_and_the_chart_carry_those_numbers(sized):
    from healcore.results import cells, charts, data_size, load_runs

    expected = expected_points(sized)
    points = data_size.size_points(cells(load_runs(sized)))
    table = data_size.size_table(points, "deficit")
    row = table[(table["panel"] == "minilm-l6 · sst2") & (table["series"] == "bottom 50%")].iloc[0]
    rows, _, _, deficit = expected[("sst2", "bottom 50%", 250)]
    assert row[f"{rows:,} rows"] == f"{deficit:.2f}"
    f1_table = data_size.size_table(points, "f1")
    row = f1_table[(f1_table["panel"] == "minilm-l6 · ag_news") & (f1_table["series"] == "clean (0%)")].iloc[0]
    rows, f1, std, _ = expected[("ag_news", "clean (0%)", 1000)]
    assert row[f"{rows:,} rows"] == f"{f1:.2f} ± {std:.2f}"
    spec = charts.size_curves(points, "f1", "weighted F1").to_dict()
    data = next(iter(spec["datasets"].values()))
    drawn = {(d["dataset"], d["series"], d["max_train"]): d["f1"] for d in data}
    assert drawn == pytest.approx({k: v[1] for k, v in expected.items()})
    colour = spec["spec"]["layer"][0]["encoding"]["color"]
    assert colour["legend"] is not None and colour["scale"]["domain"][0] == "clean (0%)"


def test_the_degradation_page_shows_the_size_section(sized, monkeypatch):
    from pages_helpers import open_page, texts

    expected = expected_points(sized)
    monkeypatch.setenv("HEALCORE_RUNS", str(sized))
    at = open_page("Degradation curves")
    assert not at.exception
    assert any(s.value == "Healing against training-set size" for s in at.subheader)
    shown = next(s for s in at.selectbox if s.label == "Show")
    shown.set_value("deficit").run()
    frame = next(df.value for df in at.dataframe if "series" in df.value.columns and "panel" in df.value.columns)
    rows, _, _, deficit = expected[("sst2", "bottom 50%, remove", 1000)]
    row = frame[(frame["panel"] == "minilm-l6 · sst2") & (frame["series"] == "bottom 50%, remove")].iloc[0]
    assert row[f"{rows:,} rows"] == f"{deficit:.2f}"
    assert "rows it trained on" in texts(at)


def test_the_report_has_the_size_section(sized, tmp_path):
    from healcore.results.report import write_report

    expected = expected_points(sized)
    path = write_report(sized, tmp_path / "out", figures_prefix="sizes")
    text = path.read_text()
    assert "## Healing against training-set size" in text
    rows, f1, std, _ = expected[("sst2", "top 50%", 500)]
    assert f"{f1:.2f} ± {std:.2f}" in text
    assert (tmp_path / "out" / "figures" / "sizes-data-size.png").is_file()
