"""Grid specs, presets, local and Ray execution, resumption after a kill, and results tables."""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from healcore.core.errors import ConfigError
from healcore.grids.plan import plan
from healcore.grids.spec import expand, preset_names
from healcore.store.runs import RunStore

from conftest import ROOT, kill_grid, wait_for


def test_every_preset_loads_and_states_its_command():
    names = preset_names()
    assert {"demo", "paper-table1", "paper-table3-mean-pooling", "paper-table4-linear-probe",
            "paper-table5-pairs", "reproduction-minilm"} <= set(names)
    for name in names:
        grid = expand(name)
        assert grid.configs, name
        text = (ROOT / "healcore" / "presets" / f"{name}.yaml").read_text()
        first = text.splitlines()[0]
        assert text.startswith("# Run: ") and "healcore " in first and f" grid {name}" in first
    assert len(expand("demo").configs) == 4


def test_levels_follow_each_models_layer_count():
    grid = expand("paper-table1")
    distil = {c.corrupt for c in grid.configs if c.model == "distilbert-base-uncased"}
    assert distil == {"none", "bottom:3", "top:3", "bottom:6"}
    base = {c.corrupt for c in grid.configs if c.model == "bert-base-uncased"}
    assert base == {"none", "bottom:3", "top:3", "bottom:6", "top:6", "bottom:9", "top:9", "bottom:12"}
    assert any("25% skipped" in n for n in grid.notes)
    assert {c.lr for c in grid.configs} == {1e-5, 2e-5, 5e-5} and all(c.epochs == 10 for c in grid.configs)


@pytest.mark.parametrize("spec,match", [
    ({"modelz": ["x"]}, "'modelz'"), ({"base": {"epoch": 3}}, "'epoch'"),
    ({"corruption": {"sides": ["middle"], "levels": [1]}}, "bottom or top"),
    ({"corruption": {"levels": ["abc"]}}, "neither a percentage"), ({"lrs": []}, "'lrs' is empty"),
    ({"corruption": {"level": [1]}}, "'level'"), ({"name": "../evil"}, "grid name"),
])
def test_bad_grid_specs_name_the_key(spec, match):
    with pytest.raises(ConfigError, match=match):
        expand({"name": "t", "models": ["minilm-l6"], **spec})


def _grid_file(tmp_path, tiny_bert, levels=(0, 1, 4), seeds=(0,), epochs=2):
    spec = {"name": "t", "models": [tiny_bert], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom"], "levels": list(levels)}, "lrs": [1e-3], "seeds": list(seeds),
            "base": {"epochs": epochs, "batch_size": 16, "max_length": 48, "max_train": 120, "max_test": 60,
                     "feature_samples": 20, "probe_samples": 40}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(*args, store, **kw):
    return subprocess.run([sys.executable, "-m", "healcore", "--store", str(store), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, **kw)


def test_grid_runs_then_does_nothing_the_second_time(tmp_path, tiny_bert):
    spec = _grid_file(tmp_path, tiny_bert)
    store = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    first = _cli("grid", str(spec), "--workers", "2", store=store, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 completed, 0 failed" in first.stdout
    # two runs at a time share the cores: each run's recorded hardware names its share of threads
    share = max(1, (os.cpu_count() or 1) // 2)
    for run_id in RunStore(store).run_ids():
        hardware = RunStore(store).summary(run_id)["hardware"]
        assert hardware.endswith(f"({share} threads)"), hardware
    second = _cli("grid", str(spec), store=store)
    assert "3 finished" in second.stdout and "nothing to do" in second.stdout
    dry = _cli("grid", str(spec), "--dry-run", "--set", "epochs=3", store=store)
    assert "3 to run" in dry.stdout and "from measured throughput" in dry.stdout
    status = _cli("status", "--json", store=store)
    assert json.loads(status.stdout)["states"] == {"completed": 3}


def test_thread_share_splits_the_cores_unless_the_user_chose():
    from healcore.grids.local import thread_share

    cores = os.cpu_count() or 1
    assert thread_share(1, {}) == {}  # one run: torch's default (all cores)
    assert thread_share(2, {}) == {"OMP_NUM_THREADS": str(max(1, cores // 2))}
    assert thread_share(4 * cores, {}) == {"OMP_NUM_THREADS": "1"}  # never zero
    assert thread_share(2, {"OMP_NUM_THREADS": "3"}) == {}  # the user's setting is kept


def test_killed_grid_restarts_and_finishes_the_rest(tmp_path, tiny_bert):
    spec = _grid_file(tmp_path, tiny_bert, levels=(0, 1, 2, 3), seeds=(0,))
    store = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store), "grid", str(spec)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    # wait for one finished run, then kill everything at once (a crash)
    assert wait_for(lambda: any(json.loads(p.read_text()).get("state") == "completed"
                                for p in store.glob("*/status.json")), timeout=300, proc=proc)
    s = RunStore(store)
    kill_grid(proc, s)
    states = [s.status(r)["effective_state"] for r in s.run_ids()]
    assert "completed" in states and len([x for x in states if x == "completed"]) < 4
    again = _cli("grid", str(spec), store=store)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(s.status(r)["state"] == "completed" for r in s.run_ids()) and len(s.run_ids()) == 4
    for run_id in s.run_ids():  # every epoch recorded once per epoch number, nothing half-written
        assert [e["epoch"] for e in s.epochs(run_id)] == [1, 2]


def test_two_grids_at_once_run_each_config_once(tmp_path, tiny_bert):
    spec = _grid_file(tmp_path, tiny_bert, levels=(0, 1, 2, 3))
    store = tmp_path / "runs"
    procs = [subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store), "grid", str(spec)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    s = RunStore(store)
    assert len(s.run_ids()) == 4 and all(s.status(r)["state"] == "completed" for r in s.run_ids())
    for run_id in s.run_ids():  # exactly one attempt each: nobody ran a config twice
        assert s.status(run_id)["attempt"] == 1, outs


@pytest.mark.xdist_group("ray")  # one worker starts Ray clusters, one at a time
def test_ray_executor_runs_a_small_grid(tmp_path, tiny_bert):
    ray = pytest.importorskip("ray")
    from healcore.grids.ray_cluster import run_ray

    store = RunStore(tmp_path / "runs")
    grid = expand(str(_grid_file(tmp_path, tiny_bert, levels=(0, 2))))
    try:
        result = run_ray(grid.configs, store, quiet=True)
    finally:
        ray.shutdown()
    assert result["completed"] == 2 and result["failed"] == 0
    assert all(store.status(r)["state"] == "completed" for r in store.run_ids())


@pytest.mark.xdist_group("ray")  # one worker starts Ray clusters, one at a time
def test_ray_rejects_a_store_workers_cannot_write(tmp_path, tiny_bert):
    ray = pytest.importorskip("ray")
    from healcore.core.errors import StoreError
    from healcore.grids.ray_cluster import run_ray

    ro = tmp_path / "ro"
    (ro / ".grids").mkdir(parents=True)
    os.chmod(ro / ".grids", 0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the store path unusable instead
        os.chmod(ro / ".grids", 0o700)
        (ro / ".grids").rmdir()
        (ro / ".grids").write_text("not a folder")
    grid = expand(str(_grid_file(tmp_path, tiny_bert, levels=(0,))))
    try:
        with pytest.raises(StoreError, match="storage every node mounts"):
            run_ray(grid.configs, RunStore(ro), quiet=True)
    finally:
        ray.shutdown()


def test_plan_skips_failed_unless_asked(tmp_path, tiny_bert):
    from healcore.store.io import atomic_write_json

    grid = expand(str(_grid_file(tmp_path, tiny_bert, levels=(0,))))
    store = RunStore(tmp_path / "runs")
    d = store.root / grid.configs[0].run_id
    atomic_write_json(d / "config.json", grid.configs[0].to_dict())
    atomic_write_json(d / "status.json", {"state": "failed", "error": "x"})
    assert len(plan(grid, store)["failed"]) == 1
    assert len(plan(grid, store, retry_failed=True)["todo"]) == 1


def test_estimate_prices_runs_from_this_hardware_first(tiny_store, tmp_path):
    """Runs measured on this machine price a grid; runs from other hardware are used only when nothing closer
    exists, and the note says so (a store copied from a GPU machine must not promise GPU speed on a laptop)."""
    import shutil

    from healcore.grids.plan import estimate_seconds
    from healcore.store.io import read_json

    configs = expand("demo").configs[:1]
    configs = [c.replace(model=read_json(next(tiny_store.glob("*/config.json")))["model"], dataset="sst2",
                         max_train=120, max_length=48, epochs=2) for c in configs]
    here, note_here, _ = estimate_seconds(configs, RunStore(tiny_store))
    assert here and here > 0 and "on this hardware" in note_here

    elsewhere = tmp_path / "runs"
    shutil.copytree(tiny_store, elsewhere)
    for summary_path in elsewhere.glob("*/summary.json"):  # the same runs, as if made on a GPU 100x faster
        summary = json.loads(summary_path.read_text())
        summary.update(hardware="NVIDIA Test GPU", device="cuda")
        summary["timing"]["tokens_per_s"] *= 100
        summary_path.write_text(json.dumps(summary))
    there, note_there, _ = estimate_seconds(configs, RunStore(elsewhere))
    assert "other kinds of hardware" in note_there
    assert there < here / 20


def test_estimate_scales_another_mode_by_a_ratio_measured_elsewhere(tiny_store, tmp_path):
    """Only linear-probe runs on this machine, full and probe runs on a GPU: full fine-tuning here is priced
    from the local probe runs times the full/probe cost ratio the GPU measured (3x here)."""
    import shutil

    from healcore.grids.plan import estimate_seconds

    store = tmp_path / "runs"
    shutil.copytree(tiny_store, store)
    folders = sorted(p.parent for p in store.glob("*/summary.json"))
    for i, folder in enumerate(folders):
        config, summary = json.loads((folder / "config.json").read_text()), json.loads((folder / "summary.json").read_text())
        if i % 3 == 0:  # this machine: linear probes only
            config["mode"] = "linear_probe"
        else:  # a GPU: full runs at 1,000 tok/s, probes at 3,000 tok/s
            config["mode"] = "full" if i % 3 == 1 else "linear_probe"
            summary.update(hardware="NVIDIA Test GPU", device="cuda")
            summary["timing"]["tokens_per_s"] = 1000.0 if config["mode"] == "full" else 3000.0
        status = json.loads((folder / "status.json").read_text())
        status["ended"] = status["started"] + 2 * summary["timing"]["train_s"]  # the same overhead everywhere
        (folder / "status.json").write_text(json.dumps(status))
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "summary.json").write_text(json.dumps(summary))
    model = json.loads((folders[0] / "config.json").read_text())["model"]
    base = expand("demo").configs[0].replace(model=model, max_train=120, max_length=48, epochs=2)
    probe_cost, _, _ = estimate_seconds([base.replace(mode="linear_probe")], RunStore(store))
    full_cost, note, _ = estimate_seconds([base.replace(mode="full")], RunStore(store))
    assert "scaled by the full/linear_probe ratio measured on NVIDIA Test GPU" in note
    assert full_cost / probe_cost == pytest.approx(3.0)


def test_a_cancel_request_in_the_record_stops_a_local_grid(tmp_path, tiny_bert):
    """What `healcore cancel --grid` does from a host that cannot signal the driver: the request in the grid's
    record stops the grid (no new run starts) and its running run ends interrupted."""
    from healcore.store.io import update_json

    # runs long enough (40 epochs, tens of seconds on a fast CPU) that the request reaches one in flight
    spec = _grid_file(tmp_path, tiny_bert, levels=(0, 1, 2, 3), epochs=40)
    store = RunStore(tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store.root), "grid", str(spec)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: any(store.status(r).get("effective_state") == "running" for r in store.run_ids()),
                    timeout=240, proc=proc)
    update_json(store.root / ".grids" / "t.json", cancel_requested=time.time())
    for run_id in store.run_ids():
        if store.status(run_id).get("effective_state") == "running":
            store.request_stop(run_id)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 1, out  # interrupted
    states = [store.status(r)["effective_state"] for r in store.run_ids()]
    assert "running" not in states and "interrupted" in states and len(states) < 4, (states, out)
    assert json.loads((store.root / ".grids" / "t.json").read_text())["state"] == "interrupted"


def test_a_plan_reads_each_data_key_once(tmp_path, monkeypatch):
    import healcore.grids.plan as plan_module
    from healcore.grids.plan import make_plan

    reads = []
    real = plan_module.load_splits
    monkeypatch.setattr(plan_module, "load_splits", lambda cfg: reads.append(cfg.dataset) or real(cfg))
    spec = {"name": "reads", "models": ["minilm-l6"], "datasets": ["sst2", "emotion"], "lrs": [1e-4, 5e-5],
            "seeds": [0, 1], "corruption": {"sides": ["bottom", "top"], "levels": ["0%", "50%"]},
            "base": {"max_train": 200, "max_test": 50}}
    plan = make_plan(spec, RunStore(tmp_path / "runs"))  # preflight checks the data, the estimate counts its tokens
    assert len(plan.todo) == 24 and plan.cost_s
    assert sorted(reads) == ["emotion", "sst2"]
