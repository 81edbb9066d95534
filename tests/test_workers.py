"""Persistent grid workers: a run executed fifth in a worker equals the same run executed first (no state is
inherited), and equals it in a fresh process; a worker that dies costs its run only and is replaced."""
import json
import os
import signal
import subprocess
import sys
import threading

from healcore.grids.local import run_local
from healcore.store.runs import RunStore

from conftest import ROOT, tiny_config, wait_for


def numbers(store: RunStore, run_id: str) -> list:
    """What a run measured, without the clocks."""
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in store.epochs(run_id)]


def test_a_run_fifth_in_a_worker_equals_it_first_and_in_a_fresh_process(tiny_bert, tmp_path):
    target = tiny_config(tiny_bert, epochs=2, corrupt="bottom:1", checkpoint_every=0)
    others = [tiny_config(tiny_bert, epochs=1, corrupt=c, lr=lr, checkpoint_every=0)
              for c, lr in (("top:2", 3e-3), ("none", 1e-3), ("bottom:4", 2e-3))]
    jobs = [(target, "first")] + [(c, "first") for c in others] + [(target, "fifth")]
    worker = subprocess.Popen([sys.executable, "-m", "healcore", "worker"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for cfg, store in jobs:
        worker.stdin.write(json.dumps({"config": cfg.to_dict(), "store": str(tmp_path / store)}) + "\n")
        worker.stdin.flush()
        assert json.loads(worker.stdout.readline())[0]["state"] == "completed"
    worker.stdin.close()
    assert worker.wait(timeout=60) == 0
    fresh = tmp_path / "fresh"
    (tmp_path / "cfg.json").write_text(json.dumps(target.to_dict()))
    subprocess.run([sys.executable, "-m", "healcore", "--store", str(fresh), "exec", str(tmp_path / "cfg.json")],
                   cwd=ROOT, check=True, capture_output=True)
    first, fifth = RunStore(tmp_path / "first"), RunStore(tmp_path / "fifth")
    assert numbers(first, target.run_id) == numbers(fifth, target.run_id) == numbers(RunStore(fresh), target.run_id)
    assert first.summary(target.run_id)["weight_movement"] == fifth.summary(target.run_id)["weight_movement"]


def test_a_worker_that_dies_costs_its_run_only_and_is_replaced(tiny_bert, tmp_path):
    store = RunStore(tmp_path / "runs")
    victim = tiny_config(tiny_bert, epochs=3, max_train=3000, batch_size=8, corrupt="top:1", checkpoint_every=0)
    rest = [tiny_config(tiny_bert, epochs=1, corrupt=c, checkpoint_every=0) for c in ("none", "bottom:2")]
    killed = []

    def stepping() -> dict:
        st = store.status(victim.run_id) if store.has_run(victim.run_id) else {}
        return st if (st.get("progress") or {}).get("step") else {}

    def kill_the_victims_worker():
        if wait_for(lambda: bool(stepping()), timeout=240, every=0.1):
            pid = stepping()["pid"]
            os.kill(pid, signal.SIGKILL)  # the worker executing it: an out-of-memory kill, say
            killed.append(pid)

    threading.Thread(target=kill_the_victims_worker, daemon=True).start()
    result = run_local([victim] + rest, store, quiet=True)
    assert killed, "the victim never started"
    assert result["failed"] == 1 and result["completed"] == 2
    assert "worker process died" in result["errors"][victim.run_id]
    assert all(store.status(c.run_id)["state"] == "completed" for c in rest)
    assert store.status(victim.run_id)["effective_state"] == "interrupted"  # resumable by the next grid
    pids = {store.status(c.run_id)["pid"] for c in rest}
    assert killed[0] not in pids  # a new worker ran the rest
