"""Faults survived: kills, a dying dashboard, full disks, OOM; no half-written files; bad input tables."""
import errno
import json
import signal
import subprocess
import sys

import pytest

from healcore.engine.run import execute
from healcore.store.runs import RunStore

from conftest import ROOT, tiny_config, wait_for


def _start_run_process(cfg, store, tmp_path) -> subprocess.Popen:
    """The run as a grid worker executes it: its own `healcore exec` process."""
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    return subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store.root), "exec", str(cfg_file)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_mid_epoch_resumes_to_identical_metrics(tiny_bert, tmp_path):
    cfg = tiny_config(tiny_bert, epochs=3, max_train=3000, max_test=100, corrupt="bottom:2", batch_size=8)
    reference = execute(cfg, RunStore(tmp_path / "reference"))
    store = RunStore(tmp_path / "runs")
    proc = _start_run_process(cfg, store, tmp_path)
    run_dir = store.root / cfg.run_id
    # wait until epoch 1 is checkpointed and epoch 2 is under way, then kill without warning
    assert wait_for(lambda: (run_dir / "checkpoint" / "latest.json").is_file() and
                 (json.loads((run_dir / "status.json").read_text()).get("progress") or {}).get("epoch") == 2, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.status(cfg.run_id)["effective_state"] == "interrupted"  # the pid is gone
    assert [e["epoch"] for e in store.epochs(cfg.run_id)] == [1]
    resumed = execute(cfg, store)
    assert "resumed from the checkpoint of epoch 1" in (run_dir / "log.txt").read_text()
    assert resumed["losses"] == reference["losses"]
    assert resumed["best"] == reference["best"] and resumed["best_epoch"] == reference["best_epoch"]
    assert not (run_dir / "checkpoint").exists()


def test_sigterm_marks_interrupted_and_keeps_the_checkpoint(tiny_bert, tmp_path):
    cfg = tiny_config(tiny_bert, epochs=3, max_train=3000, batch_size=8)
    store = RunStore(tmp_path / "runs")
    proc = _start_run_process(cfg, store, tmp_path)
    run_dir = store.root / cfg.run_id
    assert wait_for(lambda: (run_dir / "checkpoint" / "latest.json").is_file(), proc=proc)
    subprocess.run([sys.executable, "-m", "healcore", "--store", str(store.root), "cancel", cfg.run_id],
                   cwd=ROOT, check=True, capture_output=True)
    proc.wait(timeout=60)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    assert (run_dir / "checkpoint" / "latest.json").is_file()


def test_grid_survives_the_death_of_the_process_that_launched_it(tiny_bert, tmp_path):
    """What the dashboard does: launch() a grid, then the Streamlit server is killed -9."""
    spec = {"name": "survivor", "models": [tiny_bert], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom"], "levels": [0, 1]}, "lrs": [1e-3], "seeds": [0],
            "base": {"epochs": 1, "max_train": 100, "max_test": 50, "feature_samples": 10, "probe_samples": 20}}
    store = tmp_path / "runs"
    code = ("import sys, json, time; from healcore.grids.launch import launch; from healcore.grids.plan import make_plan; "
            "from healcore.store.runs import RunStore; "
            "launch(make_plan(json.loads(sys.argv[1]), RunStore(sys.argv[2])), sys.argv[2]); print('launched', flush=True); "
            "time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec), str(store)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "launched"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    s = RunStore(store)
    assert wait_for(lambda: len(s.run_ids()) == 2 and all(s.status(r).get("state") == "completed" for r in s.run_ids()))
    assert wait_for(lambda: json.loads((store / ".grids" / "survivor.json").read_text())["state"] == "finished")


def test_full_disk_fails_one_run_and_touches_nothing_else(tiny_bert, tmp_path, monkeypatch):
    from healcore.store.runs import RunHandle

    store = RunStore(tmp_path / "runs")
    good = tiny_config(tiny_bert, epochs=1)
    execute(good, store)
    before = {p.name: p.read_bytes() for p in (store.root / good.run_id).iterdir() if p.is_file()}

    def no_space(self, row):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunHandle, "append_metrics", no_space)
    bad = tiny_config(tiny_bert, epochs=1, corrupt="top:1")
    with pytest.raises(OSError):
        execute(bad, store)
    st = store.status(bad.run_id)
    assert st["state"] == "failed" and st["error"].startswith("disk full")
    after = {p.name: p.read_bytes() for p in (store.root / good.run_id).iterdir() if p.is_file()}
    assert after == before


def test_cuda_out_of_memory_is_a_failed_run_with_advice(tiny_bert, tmp_path, monkeypatch):
    import torch

    import healcore.engine.run as run  # where the recipe calls train_epoch

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run, "train_epoch", oom)
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(tiny_bert, epochs=1)
    with pytest.raises(torch.OutOfMemoryError):
        execute(cfg, store)
    assert "lower batch_size" in store.status(cfg.run_id)["error"]


def test_failed_run_does_not_stop_the_grid(tiny_bert, tmp_path):
    from healcore.grids.local import run_local
    from healcore.grids.spec import expand

    spec = {"name": "g", "models": [tiny_bert], "datasets": ["sst2"], "lrs": [1e-3],
            "corruption": [{"sides": ["bottom"], "levels": [0]},
                           {"sides": ["bottom"], "levels": [4], "method": "bitflip", "strengths": [0.05]}],
            "base": {"epochs": 1, "max_train": 100, "max_test": 50, "feature_samples": 10, "probe_samples": 20}}
    grid = expand(spec)
    result = run_local(grid.configs, RunStore(tmp_path / "runs"), quiet=True)
    assert result["completed"] == 1 and result["failed"] == 1
    assert "NaN" in next(iter(result["errors"].values()))


def test_readers_tolerate_a_torn_last_line_and_stray_temp_files(tiny_bert, tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(tiny_bert, epochs=2)
    execute(cfg, store)
    d = store.root / cfg.run_id
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_loss": 0.1, "te')  # a kill in the middle of a write
    (d / ".status.json.123.tmp").write_text('{"state": "runn')
    assert [e["epoch"] for e in store.epochs(cfg.run_id)] == [1, 2]
    assert store.status(cfg.run_id)["state"] == "completed"
    from healcore.results.runs_table import load_epochs, load_runs

    assert len(load_epochs(store.root)) == 2 and load_runs(store.root).iloc[0]["state"] == "completed"
    for p in d.rglob("*.json"):
        json.loads(p.read_text())  # every JSON file is whole


def test_completed_run_keeps_only_what_the_dashboard_needs(tiny_bert, tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(tiny_bert, epochs=2)
    execute(cfg, store)
    names = sorted(p.relative_to(store.root / cfg.run_id).as_posix()
                   for p in (store.root / cfg.run_id).rglob("*") if p.is_file())
    assert names == [".lock", "analysis.npz", "config.json", "features/before.npz", "features/best.npz", "log.txt",
                     "metrics.jsonl", "probe.json", "status.json", "summary.json"]
