"""The learning-rate schedule: what each one does, that it reaches the optimizer, and that run folders written
before it existed keep their run ids and are reused (tests/data/legacy-store was written at commit 4cc3e81)."""
import json
import math
import shutil
import subprocess
import sys

import pytest

from healcore.core.config import RunConfig
from healcore.engine.run import execute
from healcore.engine.train import lr_factor
from healcore.results.runs_table import load_runs
from healcore.store.runs import RunStore

from conftest import ROOT, tiny_config

LEGACY = ROOT / "tests" / "data" / "legacy-store"


def test_lr_factor_per_schedule():
    assert [round(lr_factor(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert [lr_factor(s, 10, 0, "constant") for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [round(lr_factor(s, 10, 2, "constant"), 3) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    cosine = [lr_factor(s, 10, 0, "cosine") for s in range(11)]
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0)
    assert cosine[2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_the_schedule_reaches_the_optimizer(schedule, tiny_bert, store):
    """The learning rate each optimizer step used, read from the optimizer itself."""
    from healcore.engine.run import RunObserver

    seen = []

    def recording(opt):
        opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))

    cfg = tiny_config(tiny_bert, epochs=2, lr=1e-3, lr_schedule=schedule, warmup_ratio=0.0)
    execute(cfg, store, observer=RunObserver(optimizer=recording))
    steps = len(seen)
    expected = [1e-3 * lr_factor(s, steps, 0, schedule) for s in range(steps)]
    assert seen == pytest.approx(expected)
    assert json.loads((store.path(cfg.run_id) / "summary.json").read_text())["config"]["lr_schedule"] == schedule
    if schedule == "constant":
        assert set(seen) == {1e-3}
    else:
        assert seen[-1] < seen[0] / 4


def test_schedule_is_part_of_the_run_id_except_the_legacy_linear():
    base = RunConfig(corrupt="bottom:2")
    ids = {s: base.replace(lr_schedule=s).run_id for s in ("constant", "linear", "cosine")}
    assert len(set(ids.values())) == 3
    assert "lr_schedule" not in json.loads(base.replace(lr_schedule="linear").canonical_json())
    assert json.loads(base.canonical_json())["lr_schedule"] == "constant"


def test_folders_written_before_the_schedule_existed_read_as_linear_and_keep_their_ids():
    folders = sorted(p for p in LEGACY.iterdir() if (p / "config.json").is_file())
    assert len(folders) == 3
    for folder in folders:
        stored = json.loads((folder / "config.json").read_text())
        assert "lr_schedule" not in stored  # written by the old code
        assert RunConfig.from_stored(stored).lr_schedule == "linear"
        assert RunConfig.from_stored(stored).run_id == folder.name
    runs = load_runs(LEGACY)
    assert set(runs["lr_schedule"]) == {"linear"} and set(runs["state"]) == {"completed"}


@pytest.mark.integration  # starts processes
def test_a_legacy_store_is_reused_not_rerun(tmp_path):
    store = tmp_path / "runs"
    shutil.copytree(LEGACY, store)
    spec = str(ROOT / "tests" / "data" / "legacy-grid.yaml")

    def dry(*extra):
        out = subprocess.run([sys.executable, "-m", "healcore", "--store", str(store), "grid", spec, "--dry-run",
                              *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "3 finished" in dry("--set", "lr_schedule=linear") and "0 to run" in dry("--set", "lr_schedule=linear")
    assert "3 to run" in dry()  # the default is now the paper's constant rate: other runs
    # executing a legacy config reuses the stored run (its folder is accepted as the same config)
    cfg = RunConfig.from_stored(json.loads(next(store.glob("*clean*/config.json")).read_text()))
    before = (store / cfg.run_id / "summary.json").read_bytes()
    assert execute(cfg, RunStore(store))["run_id"] == cfg.run_id
    assert (store / cfg.run_id / "summary.json").read_bytes() == before


def test_the_reproduction_presets_keep_the_schedule_their_stored_runs_used():
    from healcore.grids.spec import expand, preset_names

    for name in preset_names():
        schedules = {c.lr_schedule for c in expand(name).configs}
        if name.startswith("paper-") or name.startswith("reproduction-minilm-constant"):
            assert schedules == {"constant"}, name
        elif name.startswith("reproduction-"):
            assert schedules == {"linear"}, name
