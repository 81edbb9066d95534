"""A real multi-node Ray cluster on this machine: a head and 2 worker nodes, each its own raylet with 1 CPU and
a resource of its own. A grid of 6 tiny runs survives losing a worker node in the middle of a run; the store
probe reaches every node; a cancelled grid's runs end interrupted; a killed driver's grid, restarted, finishes
running no config twice; bad addresses and versions are one line."""
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import yaml

from healcore.store.runs import RunStore

from conftest import ROOT, wait_for

ray = pytest.importorskip("ray")
# every test here shares one worker of pytest-xdist (--dist loadgroup): one Ray cluster on the machine at a time
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # the head takes no task: every run lands on a worker node
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, resources={f"node_{name}": 1}) for name in ("a", "b")]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


def spec_file(tmp_path, model, levels, epochs=3, max_train=600, checkpoint_every=1, name="ray") -> str:
    spec = {"name": name, "models": [model], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom", "top"], "levels": levels}, "lrs": [1e-3], "seeds": [0],
            "base": {"epochs": epochs, "batch_size": 8, "max_length": 48, "max_train": max_train, "max_test": 60,
                     "feature_samples": 20, "probe_samples": 40, "analysis_samples": 0,
                     "checkpoint_every": checkpoint_every}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def grid(store, spec, address, *extra, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store), "grid", spec, "--executor", "ray",
                             "--address", address, *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def test_a_grid_survives_losing_a_worker_node(cluster, tiny_bert, tmp_path):
    c, workers = cluster
    store = RunStore(tmp_path / "runs")
    spec = spec_file(tmp_path, tiny_bert, levels=[0, 1, 2, 4], max_train=1200)  # clean, bottom/top 1, 2, all: 6 runs
    started = time.time()
    proc = grid(store.root, spec, c.address)
    def into_epoch_2() -> tuple | None:  # a run past its first checkpoint, into epoch 2, and its node
        for run_id in store.run_ids():
            st = store.status(run_id)
            if (st.get("progress") or {}).get("epoch") == 2 and (store.files(run_id).checkpoints / "latest.json").is_file() \
                    and st.get("node"):
                return run_id, st["node"]
        return None

    assert wait_for(lambda: into_epoch_2() is not None, timeout=150, proc=proc), proc.communicate(timeout=60)[0]
    victim = into_epoch_2()
    run_id, node_id = victim
    node = next(n for n in workers if n.node_id == node_id)
    c.remove_node(node, allow_graceful=False)  # SIGKILL of that raylet and its worker processes
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    assert time.time() - started < 180, "the multi-node test must stay under 3 minutes"
    ids = store.run_ids()
    assert len(ids) == 6
    for rid in ids:
        st = store.status(rid)
        assert st["state"] == "completed", (rid, st)
        assert store.files(rid).log.read_text().count("completed") == 1  # completed exactly once
        assert [e["epoch"] for e in store.epochs(rid)] == [1, 2, 3]
    killed = store.status(run_id)
    assert killed["attempt"] == 2, killed
    log = store.files(run_id).log.read_text()
    resumed = re.search(r"resumed from the checkpoint of epoch (\d)", log)
    assert resumed and 1 <= int(resumed.group(1)) < 3, log  # the epochs before the kill were not done again
    assert all(store.status(r)["attempt"] == 1 for r in ids if r != run_id)
    # on CPU the resumed run's metrics equal an undisturbed run's (the same thread count as a 1-CPU task)
    reference = RunStore(tmp_path / "reference")
    cfg = json.loads(store.files(run_id).config.read_text())
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    subprocess.run([sys.executable, "-m", "healcore", "--store", str(reference.root), "exec", str(tmp_path / "cfg.json")],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert store.summary(run_id)["losses"] == reference.summary(run_id)["losses"]
    assert store.summary(run_id)["best"] == reference.summary(run_id)["best"]
    record = json.loads((store.root / ".grids" / "ray.json").read_text())
    assert record["state"] == "finished" and record["executor"] == "ray" and record["address"] == c.address
    assert record["ray_job_id"]


def test_the_store_probe_runs_on_every_node(cluster, tmp_path):
    c, _ = cluster
    code = f"""
import ray, json
from healcore.grids.ray_cluster import connect, check_store_on_every_node
r = connect({c.address!r})
probed = check_store_on_every_node(r, {str(tmp_path)!r})
alive = [n["NodeID"] for n in r.nodes() if n["Alive"]]
print(json.dumps({{"probed": sorted(probed), "alive": sorted(alive)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["probed"] == got["alive"] and len(got["alive"]) >= 2


def test_a_store_the_nodes_cannot_write_is_refused_naming_them(cluster, tiny_bert, tmp_path):
    c, _ = cluster
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / ".grids").write_text("not a folder")  # (root writes anywhere: make the store's folder unusable instead)
    proc = grid(ro, spec_file(tmp_path, tiny_bert, levels=[0]), c.address)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2, out
    line = [l for l in out.splitlines() if l.startswith("healcore: error:")]
    assert len(line) == 1 and "cannot be written from" in line[0] and "(node " in line[0], out
    assert not list(ro.glob("*/config.json"))


def test_a_cancelled_ray_grid_leaves_its_runs_interrupted_and_resumable(cluster, tiny_bert, tmp_path):
    c, _ = cluster
    store = RunStore(tmp_path / "runs")
    spec = spec_file(tmp_path, tiny_bert, levels=[0, 1], epochs=3, max_train=1500, name="stoppable")
    proc = grid(store.root, spec, c.address)
    assert wait_for(lambda: any((store.status(r).get("progress") or {}).get("step") for r in store.run_ids()),
                    timeout=150, proc=proc)
    done = subprocess.run([sys.executable, "-m", "healcore", "--store", str(store.root), "cancel", "--grid",
                           "stoppable"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = proc.communicate(timeout=120)[0]
    states = {r: store.status(r)["effective_state"] for r in store.run_ids()}
    assert "interrupted" in states.values() and "running" not in states.values(), (states, out)
    again = grid(store.root, spec, c.address)
    assert again.wait(timeout=240) == 0
    assert all(store.status(r)["state"] == "completed" for r in store.run_ids())


def test_an_unreachable_address_is_one_line(tiny_bert, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = grid(tmp_path / "runs", spec_file(tmp_path, tiny_bert, levels=[0]), f"127.0.0.1:{port}")
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2
    errors = [l for l in out.splitlines() if l.strip()]
    assert errors[-1].startswith("healcore: error: cannot reach a Ray cluster at 127.0.0.1:") and "ray start" in errors[-1]
    assert "Traceback" not in out and not list((tmp_path / "runs").glob("*/config.json"))


def test_a_ray_version_mismatch_is_one_line(cluster, tmp_path):
    c, _ = cluster
    code = f"""
import ray
ray.__version__ = "0.0.1"  # as if this process had another Ray than the cluster
from healcore.core.errors import HealcoreError
from healcore.grids.ray_cluster import connect
try:
    connect({c.address!r})
except HealcoreError as err:
    print("ONE LINE:", err)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = [l for l in out.stdout.splitlines() if l.startswith("ONE LINE:")]
    assert line and "Ray version mismatch" in line[0] and f"Ray {ray.__version__}" in line[0], out.stdout + out.stderr


def test_a_killed_driver_restarted_finishes_the_grid_running_no_config_twice(cluster, tiny_bert, tmp_path):
    """SIGKILL of `healcore grid` (the driver) mid-run, then the same command again: finished runs are skipped,
    the rest complete, and no run is executed by two processes at once (a run still held by a task of the dead
    driver comes back busy and is submitted again later)."""
    import signal

    c, _ = cluster
    store = RunStore(tmp_path / "runs")
    spec = spec_file(tmp_path, tiny_bert, levels=[0, 1], epochs=3, max_train=1200, name="driver")
    proc = grid(store.root, spec, c.address)
    assert wait_for(lambda: any((store.status(r).get("progress") or {}).get("epoch") == 2 for r in store.run_ids()),
                    timeout=150, proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = grid(store.root, spec, c.address)
    out = again.communicate(timeout=240)[0]
    assert again.returncode == 0, out
    ids = store.run_ids()
    assert len(ids) == 3 and all(store.status(r)["state"] == "completed" for r in ids), out
    for rid in ids:
        log = store.files(rid).log.read_text()
        assert log.count("completed") == 1, log  # completed exactly once
        assert [e["epoch"] for e in store.epochs(rid)] == [1, 2, 3]  # every epoch recorded once


def test_decoders_run_on_the_cluster_with_their_own_pooling(cluster, tiny_families, tmp_path):
    """A GPT-2 and a Llama-family decoder (tiny, random weights) through Ray: each run on a worker node, pooled on
    its last real token."""
    c, _ = cluster
    store = RunStore(tmp_path / "runs")
    spec = yaml.safe_load(open(spec_file(tmp_path, tiny_families["gpt2"], levels=[1], epochs=1, max_train=100)))
    spec["models"] = [tiny_families["gpt2"], tiny_families["qwen2"]]
    path = tmp_path / "decoders.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = grid(store.root, str(path), c.address)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    summaries = [store.summary(r) for r in store.run_ids()]
    assert len(summaries) == 4 and {s["config"]["pooling"] for s in summaries} == {"last"}
