"""One owner per idea: which keys make a cell (config.py's field groups), how many runs execute at once
(Execution.slots), one spelling of a run's layers, and the rules of running a grid kept in the library."""
import numpy as np
import pandas as pd
import pytest

from healcore.core.config import CELL_FIELDS, EXECUTION_FIELDS, EXPERIMENT_FIELDS, RunConfig
from healcore.core.errors import ConfigError
from healcore.results import synthetic as syn

from conftest import tiny_config


# ------------------------------------------------------------------------------------------ cells
@pytest.mark.parametrize("key,values", [("batch_size", (16, 32)), ("max_train", (500, 1000)),
                                        ("weight_decay", (0.0, 0.01)), ("warmup_ratio", (0.0, 0.1)),
                                        ("select_on", ("validation", "test"))])
def test_cells_that_differ_in_any_experiment_key_have_their_own_id_and_runs(tmp_path, key, values):
    from healcore.results import cells, load_runs

    for value in values:
        syn.build(tmp_path / "runs", levels=(0, 3), seeds=(0,), lrs=(5e-5,), base={key: value})
    runs = load_runs(tmp_path / "runs")
    table = cells(runs)
    assert len(table) == 3 * len(values) and table["cell_id"].is_unique  # clean, bottom 3, top 3 each
    for value in values:  # a click on one cell lists its own runs only
        cell = table[(table["side"] == "bottom") & (table[key] == value)]
        assert len(cell) == 1
        listed = runs[runs["run_id"].isin(cell.iloc[0]["all_run_ids"])]
        assert set(listed[key]) == {value}


def test_every_grouping_derives_from_the_field_groups():
    from healcore.core.fusion import fusion_groups
    from healcore.results.keys import CELL_KEYS, line_keys

    assert set(CELL_KEYS) >= set(CELL_FIELDS) - {"corrupt"}
    assert not set(CELL_KEYS) & {"lr", "seed", *EXECUTION_FIELDS}
    assert set(line_keys(pd.DataFrame(columns=CELL_KEYS))) == set(EXPERIMENT_FIELDS)
    a = RunConfig(corrupt="bottom:1", lr=2e-5)
    # runs that choose their best epoch differently never fuse (their members would each need their own)
    groups = fusion_groups([a, a.replace(corrupt="top:1", lr=5e-5), a.replace(select_on="test")])
    assert sorted(len(g) for g in groups) == [1, 2]


def test_a_corrupted_run_pairs_with_the_clean_run_of_its_own_batch_size(tmp_path):
    from healcore.results import load_runs
    from healcore.results.analysis import clean_partner

    for batch in (16, 32):
        syn.build(tmp_path / "runs", levels=(0, 3), seeds=(0,), lrs=(5e-5,), base={"batch_size": batch})
    runs = load_runs(tmp_path / "runs")
    pairs = clean_partner(runs)
    by_id = runs.set_index("run_id")["batch_size"]
    assert len(pairs) == 4 and all(by_id[r] == by_id[c] for r, c in pairs.items())


def test_two_custom_selections_of_one_size_are_two_cells(tmp_path):
    from healcore.results import cells, load_runs

    store = syn.build(tmp_path / "runs", levels=(0,), seeds=(0,), lrs=(5e-5,))
    rng = np.random.default_rng(0)
    for layers in ("1,3,5", "2,4,6"):
        syn.write_run(store, RunConfig(corrupt=layers, lr=5e-5), 70.0, 6, ["negative", "positive"], rng)
    table = cells(load_runs(store.root))
    custom = table[table["side"] == "custom"]
    assert sorted(custom["layers"]) == ["1,3,5", "2,4,6"] and custom["cell_id"].is_unique


# ------------------------------------------------------------------------------------------ layers
def test_one_spelling_of_a_set_of_layers():
    six = {text: RunConfig(corrupt=text).with_layers_of(6) for text in ("bottom:50%", "bottom:3", "1,2,3")}
    assert {c.corrupt for c in six.values()} == {"bottom:3"} and len({c.run_id for c in six.values()}) == 1
    assert RunConfig(corrupt="top:100%").with_layers_of(6).corrupt == "bottom:6"  # all layers: as grids write it
    assert RunConfig(corrupt="4,5,6").with_layers_of(6).corrupt == "top:3"
    assert RunConfig(corrupt="2,4").with_layers_of(6).corrupt == "2,4"
    with pytest.raises(ConfigError, match="not a whole number of layers"):
        RunConfig(corrupt="bottom:25%").with_layers_of(6)
    cfg = RunConfig(corrupt="bottom:50%")
    assert cfg.layers is cfg.layers and cfg.layers.percent == 50  # parsed once, when the config is built


def test_the_same_layers_spelled_two_ways_are_one_run(tiny_bert, tmp_path):
    """A finished bottom:2 run of a 4-layer model is reused by `healcore run --corrupt bottom:50%`, and a store that
    holds a run under the old spelling (bottom:50%, its own run id) is reused by a grid asking bottom:2."""
    from healcore.cli import main
    from healcore.engine.run import execute
    from healcore.grids.plan import make_plan
    from healcore.store.runs import RunStore

    store = RunStore(tmp_path / "runs")
    grid_run = tiny_config(tiny_bert, corrupt="bottom:2", epochs=1)
    execute(grid_run, store)
    args = ["--store", str(store.root), "run", "--model", tiny_bert, "--corrupt", "bottom:50%", "--epochs", "1",
            "--max-train", "200", "--max-test", "100", "--batch-size", "16", "--max-length", "64", "--lr", "1e-3",
            "--feature-samples", "50", "--probe-samples", "100", "--quiet"]
    assert main(args) == 0
    assert store.run_ids() == [grid_run.run_id]  # reused: no second folder

    legacy = RunStore(tmp_path / "legacy")
    old_spelling = grid_run.replace(corrupt="bottom:50%")
    assert old_spelling.run_id != grid_run.run_id  # a run stored before one spelling: its id stays readable
    execute(old_spelling, legacy)
    spec = {"name": "g", "models": [tiny_bert], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom"], "levels": ["50%"]}, "lrs": [1e-3],
            "base": {k: getattr(grid_run, k) for k in ("epochs", "batch_size", "max_length", "max_train", "max_test",
                                                      "feature_samples", "probe_samples")}}
    plan = make_plan(spec, legacy)
    assert plan.counts()["completed"] == 1 and not plan.todo
    assert [c.run_id for c in plan.grid.configs] == [old_spelling.run_id]


# ------------------------------------------------------------------------------------------ runs at once
@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_runs_at_once_is_one_formula_for_executor_estimate_and_progress(gpus, tmp_path, monkeypatch):
    from healcore.grids.execution import Execution, recorded_slots
    from healcore.grids.launch import grid_record
    from healcore.grids.local import gpu_slots
    from healcore.grids.plan import make_plan
    from healcore.grids.progress import grid_progress
    from healcore.results import load_runs
    from healcore.store.runs import RunStore

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in range(gpus)) if gpus else "")
    execution = Execution(workers=3, runs_per_gpu=4)
    expected = gpus * 4 if gpus else 3
    assert execution.slots() == expected == (len(gpu_slots(4)) or 3)  # what the local executor starts
    store = syn.build(tmp_path / "runs", levels=(0,), seeds=(0,), lrs=(5e-5,))  # one finished run: 36 s of wall
    spec = {"name": "more", "models": ["minilm-l6"], "datasets": ["sst2"], "corruption": {"levels": ["0%"]},
            "lrs": [5e-5], "seeds": list(range(1, 13)), "base": {"epochs": 3, "max_train": 100, "max_test": 50}}
    plan = make_plan(spec, RunStore(store.root), execution=execution)
    assert plan.slots == expected and plan.wall_s == pytest.approx(plan.cost_s / expected)
    record = {**grid_record(plan, "running", 1), "alive": True}
    assert recorded_slots(record) == expected
    runs = load_runs(store.root)
    eta = grid_progress(record, runs)["eta_s"]
    assert eta == pytest.approx(plan.wall_s, rel=1e-3)  # before any run of it finished, the ETA is the estimate shown


def test_the_rules_of_running_a_grid_live_in_the_library():
    from healcore.grids.execution import Execution
    from healcore.core.fusion import MAX_MEMBERS

    with pytest.raises(ConfigError, match="local executor only"):
        Execution(executor="ray", fuse=3)
    with pytest.raises(ConfigError, match="fuse"):
        Execution(fuse=MAX_MEMBERS + 1)
    with pytest.raises(ConfigError, match="workers"):
        Execution(workers=0)
    assert Execution(executor="ray", fuse=0).record()["fuse"] == 0
