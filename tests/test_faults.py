"""Faults of the disk and of a run folder's own files, and hostile names and sizes (docs/RELIABILITY.md): each costs
one line and nothing else, and a damaged run heals when it is run again.

- A full disk, for real: a small tmpfs of the test's own (mounting needs root; CI runs as root), during a run and
  during a report. One line, exit 2, the run `failed` with the reason, every older file byte-identical, and the same
  command completes once space is freed.
- Damage to each kind of run file (truncated, garbage, empty), in a copy of a real trained store: status names the
  file and what a rerun does, the report and every page go on, and a rerun of the grid heals exactly the damaged
  runs, to the numbers they had.
- Hostile output names and sizes: one line, exit 2, nothing written.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from healcore import cli
from healcore.core.config import RunConfig
from healcore.core.errors import DiskFullError
from healcore.store.io import atomic_write_bytes, npz_problem, read_json_checked, read_npz_checked
from healcore.store.runs import RunStore

from conftest import ROOT, tiny_config

MODES = ("truncated", "garbage", "empty")


def spoil(path: Path, mode: str) -> None:
    """A file as a failed copy, a bad disk or a stray editor leaves it."""
    data = path.read_bytes()
    if mode == "truncated":
        path.write_bytes(data[: max(1, len(data) // 2)])
    elif mode == "garbage":
        path.write_bytes(np.random.default_rng(len(data)).integers(0, 256, max(len(data), 64), np.uint8).tobytes())
    else:
        path.write_bytes(b"")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("healcore: error:") and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------------ a full disk
@pytest.fixture()
def small_disk(tmp_path):
    """A 32 MB tmpfs mounted for this test alone: a disk that really fills (ENOSPC from the kernel)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> Path:
    """Fill the disk but for `leave` bytes."""
    filler = mount / "filler"
    with open(filler, "wb") as f:
        f.write(bytes(max(0, shutil.disk_usage(mount).free - leave)))
    return filler


def test_a_disk_that_fills_mid_run_costs_one_line_and_the_same_command_completes(small_disk, tiny_bert):
    """8 MB free: the first epoch's checkpoint (model 4.8 MB, then AdamW's moments 8 MB) does not fit."""
    runs = small_disk / "runs"
    env = {**os.environ, "HEALCORE_DATA": os.environ["HEALCORE_DATA"]}
    flags = ["--model", tiny_bert, "--dataset", "sst2", "--epochs", "2", "--batch-size", "16", "--max-length", "64",
             "--max-train", "200", "--max-test", "100", "--lr", "1e-3", "--feature-samples", "50", "--quiet"]
    run = [sys.executable, "-m", "healcore", "--store", str(runs), "run"]
    first = subprocess.run(run + flags + ["--seed", "1", "--checkpoint-every", "0"], capture_output=True, text=True,
                           env=env)
    assert first.returncode == 0, first.stderr
    other = runs / RunStore(runs).run_ids()[0]
    before = snapshot(other)
    filler = fill(small_disk, 8 * 1024 * 1024)
    full = subprocess.run(run + flags, capture_output=True, text=True, env=env)
    assert full.returncode == 2
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"healcore: error: disk full on {small_disk}"), full.stderr
    assert "writing optimizer.safetensors" in lines[0] and "free space and run the same command again" in lines[0]
    store = RunStore(runs)
    failed = next(r for r in store.run_ids() if r != other.name)
    status = store.status(failed)
    assert status["state"] == "failed" and status["error"].startswith("disk full on")
    assert "this run writes about" in status["error"]
    assert snapshot(other) == before  # nothing else touched
    assert not list(runs.rglob(".*.tmp")) and not (runs / failed / ".reserve").exists()
    filler.unlink()
    again = subprocess.run(run + flags, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert store.status(failed)["state"] == "completed" and store.read(failed).damaged == []


def test_a_disk_that_fills_mid_report_leaves_the_previous_report_whole(small_disk, tiny_store, capsys):
    out = small_disk / "reports"
    assert cli.main(["--store", str(tiny_store), "report", "--out", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert len(before) >= 4  # the Markdown and its figures
    fill(small_disk, 100 * 1024)
    assert cli.main(["--store", str(tiny_store), "report", "--out", str(out)]) == 2
    assert one_error_line(capsys).startswith(f"healcore: error: disk full on {small_disk}")
    assert snapshot(out) == before and not list(out.rglob(".*.tmp"))


def test_the_one_writer_keeps_the_old_file_when_the_new_one_does_not_fit(small_disk):
    path = small_disk / "summary.json"
    atomic_write_bytes(path, b'{"old": true}')
    fill(small_disk, 256 * 1024)
    with pytest.raises(DiskFullError, match=r"disk full on .* writing summary.json \(1.0 MB\); free space"):
        atomic_write_bytes(path, bytes(1_000_000))
    assert path.read_bytes() == b'{"old": true}' and [p.name for p in small_disk.iterdir()] == ["filler",
                                                                                                  "summary.json"]


# ------------------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["json", "npz"])
def test_readers_answer_damaged_whatever_the_library_raises(tmp_path, kind, mode):
    path = tmp_path / f"file.{kind}"
    if kind == "json":
        path.write_text(json.dumps({"a": list(range(100))}))
    else:
        np.savez(path, a=np.arange(1000))
    spoil(path, mode)
    if kind == "json":
        value, problem = read_json_checked(path)
    else:
        (value, problem), cheap = read_npz_checked(path), npz_problem(path)
        assert cheap  # the cheap check (a zip's end) sees it too
    assert value is None and problem


# ------------------------------------------------------------------------------------------ damaged run files
# Which file of which run (by index in the tiny store's sorted run ids), and how it is damaged. Every mode is used.
DAMAGE = [("config.json", "garbage"), ("status.json", "truncated"), ("summary.json", "empty"),
          ("probe.json", "garbage"), ("metrics.jsonl", "garbage"), ("features/best.npz", "truncated"),
          ("features/before.npz", "garbage"), ("analysis.npz", "empty")]


@pytest.fixture(scope="module")
def damaged(tiny_store, tmp_path_factory):
    """A copy of the real tiny store with one file of each kind damaged, each in another run."""
    root = tmp_path_factory.mktemp("damaged") / "runs"
    shutil.copytree(tiny_store, root)
    store = RunStore(root)
    ids = store.run_ids()
    hit = {ids[2 * i + 1]: name for i, (name, _) in enumerate(DAMAGE)}
    for (name, mode), run_id in zip(DAMAGE, hit):
        spoil(store.files(run_id).dir / name, mode)
    return store, hit


def test_status_names_each_damaged_file_and_what_a_rerun_does(damaged, capsys):
    from healcore.grids.launch import store_status

    store, hit = damaged
    status = store_status(store)
    listed = {a["run_id"]: a for a in status["attention"]}
    for run_id, name in hit.items():
        assert any(d.startswith(f"{name}:") for d in listed[run_id]["damaged"]), (name, listed.get(run_id))
        assert "from scratch" in listed[run_id]["rerun"]
    assert cli.main(["--store", str(store.root), "status"]) == 0
    text = capsys.readouterr().out
    for run_id, name in hit.items():
        line = next(line for line in text.splitlines() if run_id in line)
        assert f"damaged {name}:" in line and "a rerun of its grid (or healcore run) heals it" in line


def test_the_report_lists_damaged_runs_and_goes_on(damaged, tmp_path):
    from healcore.results.report import write_report

    store, hit = damaged
    text = write_report(store.root, tmp_path / "out").read_text()
    for name in hit.values():
        assert f"damaged: {name}:" in text, name


@pytest.mark.parametrize("title", ["Home", "Runs", "Grid heatmaps", "Degradation curves", "Healing over epochs",
                                   "Where healing happens", "Failures and surprises", "Embeddings", "Export"])
def test_every_page_renders_a_store_with_damaged_files(damaged, title, monkeypatch):
    from pages_helpers import open_page, texts

    store, hit = damaged
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page(title)
    assert not at.exception, at.exception
    if title == "Failures and surprises":
        shown = texts(at) + " ".join(str(df.value.to_csv()) for df in at.dataframe)
        assert all(f"damaged: {name}" in shown for name in hit.values())


@pytest.mark.parametrize("name", [name for name, _ in DAMAGE])
def test_run_detail_and_embeddings_of_a_damaged_run_say_so_and_go_on(damaged, name, monkeypatch):
    from pages_helpers import open_page

    store, hit = damaged
    run_id = next(r for r, n in hit.items() if n == name)
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    for title in ("Run detail", "Embeddings"):
        at = open_page(title, {"run": run_id})
        assert not at.exception, (title, at.exception)


def test_a_rerun_of_the_grid_heals_exactly_the_damaged_runs_to_their_numbers(damaged, tiny_store):
    """Run last in this module (it repairs the shared copy): the plan holds the damaged runs and nothing else;
    each damaged file is set aside, the run done again from scratch (a config.json is written again from the grid's
    config instead), and each ends whole with the numbers it had."""
    from healcore.engine.run import execute
    from healcore.grids.plan import plan
    from healcore.grids.spec import Grid

    store, hit = damaged
    pristine = RunStore(tiny_store)
    grid = Grid("tiny", [RunConfig.from_stored(pristine.config(r)) for r in pristine.run_ids()])
    todo = plan(grid, store)["todo"]
    assert sorted(c.run_id for c in todo) == sorted(hit)
    for cfg in todo:
        execute(cfg, store)
    for run_id, name in hit.items():
        assert store.read(run_id).damaged == [], run_id
        assert (store.files(run_id).dir / f"{name}.damaged").is_file()  # kept to look at, never read
        log = store.files(run_id).log.read_text()
        assert f"{name} is damaged" in log
        assert ("config.json written again from the config asked for" if name == "config.json"
                else "starts again from scratch") in log  # (a config's hash names its folder: nothing to rerun)
        healed, original = store.summary(run_id), pristine.summary(run_id)
        assert healed["best"]["test"]["f1_weighted"] == pytest.approx(original["best"]["test"]["f1_weighted"])
        assert healed["losses"] == pytest.approx(original["losses"])
    assert plan(grid, store)["todo"] == []


@pytest.mark.parametrize("name,mode", [("model.safetensors", "truncated"), ("latest.json", "garbage"),
                                       ("state.json", "empty"), ("optimizer.safetensors", "garbage")])
def test_a_torn_checkpoint_is_set_aside_once_and_the_run_completes(tiny_bert, tmp_path, name, mode, capsys):
    """A run interrupted after epoch 1, its checkpoint then damaged: status says so, and the next attempt sets it
    aside (never loads it) and completes from scratch with the numbers of an undisturbed run."""
    from healcore.core.errors import Interrupted
    from healcore.engine.run import execute

    store = RunStore(tmp_path / "runs")
    cfg = tiny_config(tiny_bert, epochs=2)

    def stop_after_first(row):
        raise Interrupted("stop")

    with pytest.raises(Interrupted):
        execute(cfg, store, on_epoch=stop_after_first)
    folder = store.files(cfg.run_id).checkpoints
    spoil(folder / name if name == "latest.json" else folder / "epoch-1" / name, mode)
    stored = store.read(cfg.run_id)
    assert any(d.startswith("checkpoint/") for d in stored.damaged)
    assert cli.main(["--store", str(store.root), "status"]) == 0
    assert "its damaged checkpoint is set aside" in capsys.readouterr().out
    summary = execute(cfg, store)
    log = store.files(cfg.run_id).log.read_text()
    assert "set aside; the run starts again from scratch" in log
    undisturbed = execute(cfg, RunStore(tmp_path / "other"))
    assert summary["losses"] == pytest.approx(undisturbed["losses"])
    assert store.read(cfg.run_id).damaged == []


# ------------------------------------------------------------------------------------------ many classes
def test_ten_thousand_classes_keep_metrics_small_and_the_matrix_readable(tmp_path):
    """One 60-row epoch of a 10,000-class task: its confusion matrices (100 million cells each, dense) go to a
    small compressed file beside the metrics, holding every pair exactly; a 60-class run's read back whole."""
    from collections import Counter

    from healcore.engine.evaluate import metrics

    K, rng = 10_000, np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, K, 60), rng.integers(0, K, 60)
    y_pred[:20] = y_true[:20]
    row = {"epoch": 1, "train_loss": 1.0, "test": metrics(y_true, y_pred, K), "validation": metrics(y_true, y_pred, K)}
    small_true, small_pred = y_true % 60, y_pred % 60
    store = RunStore(tmp_path / "runs")
    cfg = RunConfig(dataset="sst2", max_train=10)
    with store.open_run(cfg) as handle:
        handle.append_metrics(row)
        handle.append_metrics({"epoch": 2, "test": metrics(small_true, small_pred, 60)})
    files = store.files(cfg.run_id)
    assert files.metrics.stat().st_size < 1_000_000 and files.confusion(1).stat().st_size < 10_000
    first, second = store.epochs(cfg.run_id)
    assert first["test"]["confusion"] == "confusion/epoch-1.npz"
    stored, _ = read_npz_checked(files.confusion(1))
    pairs = Counter(zip(y_true.tolist(), y_pred.tolist()))
    assert int(stored["test_classes"]) == K and Counter(dict(zip(zip(stored["test_rows"].tolist(),
                                                                      stored["test_cols"].tolist()),
                                                                  stored["test_counts"].tolist()))) == pairs
    expected = np.zeros((60, 60), dtype=np.int64)
    np.add.at(expected, (small_true, small_pred), 1)
    assert np.array_equal(store.confusion(cfg.run_id, second), expected)  # 60 classes: its own file too


@pytest.mark.parametrize("K,n,seed", [(2, 50, 0), (4, 7, 1), (14, 300, 2), (50, 120, 3), (60, 200, 4)])
def test_metrics_are_scikit_learns_whatever_the_classes(K, n, seed):
    """Counted with bincount (linear in classes): the same numbers as scikit-learn, classes absent included."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from healcore.engine.evaluate import metrics

    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, max(1, K - 1), n)  # the last class never occurs
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, K, n))
    got, labels = metrics(y_true, y_pred, K), list(range(K))
    assert got["accuracy"] == pytest.approx(100 * accuracy_score(y_true, y_pred))
    assert got["f1_weighted"] == pytest.approx(100 * f1_score(y_true, y_pred, labels=labels, average="weighted",
                                                              zero_division=0))
    assert got["f1_macro"] == pytest.approx(100 * f1_score(y_true, y_pred, labels=sorted(set(y_true)),
                                                           average="macro", zero_division=0))
    assert got["f1_per_class"] == pytest.approx(list(100 * f1_score(y_true, y_pred, labels=labels, average=None,
                                                                     zero_division=0)))
    dense = confusion_matrix(y_true, y_pred, labels=labels)
    if K <= 50:
        assert got["confusion"] == dense.tolist()
    else:
        m = got["confusion"]
        rebuilt = np.zeros((K, K), dtype=int)
        np.add.at(rebuilt, (m["rows"], m["cols"]), m["counts"])
        assert np.array_equal(rebuilt, dense)


def test_inline_confusion_matrices_of_older_runs_still_read(tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = RunConfig(dataset="sst2", max_train=10)
    with store.open_run(cfg) as handle:
        handle.append_metrics({"epoch": 1, "test": {"confusion": [[3, 1], [0, 4]]}})
    assert store.confusion(cfg.run_id, store.epochs(cfg.run_id)[0]).tolist() == [[3, 1], [0, 4]]


# ------------------------------------------------------------------------------------------ hostile names and sizes
def test_hostile_output_names_cost_one_line_and_write_nothing(tiny_store, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    long = str(tmp_path / ("x" * 300))
    cases = [
        (["report", "--out", str(tmp_path / "out"), "--name", "../escaped"], "must be a file name"),
        (["report", "--out", str(tmp_path / "out"), "--name", "/etc/passwd"], "must be a file name"),
        (["report", "--out", str(a_file)], "is a file; give a folder"),
        (["report", "--out", long], "longer than this system allows"),
        (["compare", "--by", "lr", "--out", str(a_file / "x.md")], "is a file, not a folder"),
    ]
    for argv, expected in cases:
        assert cli.main(["--store", str(tiny_store), *argv]) == 2, argv
        assert expected in one_error_line(capsys)
    assert a_file.read_text() == "mine"
    assert not (tmp_path / "escaped.md").exists() and not (tmp_path / "ESCAPED.md").exists()
    assert not (tmp_path / "out").exists()
    assert cli.main(["data", "export", "sst2", str(a_file)]) == 2
    assert "export folder" in one_error_line(capsys) and a_file.read_text() == "mine"
    assert cli.main(["--store", long, "status"]) == 2
    assert "runs folder (--store)" in one_error_line(capsys)
    assert cli.main(["--store", str(tmp_path / "r"), "grid", long, "--dry-run"]) == 2
    assert "is neither a file nor a preset" in one_error_line(capsys)
    assert cli.main(["--store", str(tmp_path / "r"), "grid", "demo", "--set", "lr=" + "9" * 10_000, "--dry-run"]) == 2
    err = one_error_line(capsys)
    assert "cannot be read" in err and len(err) < 300
    assert not (tmp_path / "r").exists()


@pytest.mark.integration  # starts processes
def test_a_yaml_bomb_is_one_short_line_at_once(tmp_path):
    """Nine levels of aliases, nine each: 387 million items if anything walks it (it used to hang formatting the
    error). A subprocess, so a hang fails the test instead of stalling the suite."""
    lines = ["lrs: &a [1e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5]", "seeds:"]
    previous = "a"
    for level in "bcdefghi":
        lines.append(f"  - &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = level
    spec = tmp_path / "bomb.yaml"
    spec.write_text("\n".join(lines + ["name: bomb", "models: [minilm-l6]", "datasets: *i", "base: {epochs: *h}"]))
    done = subprocess.run([sys.executable, "-m", "healcore", "--store", str(tmp_path / "runs"), "grid", str(spec),
                           "--dry-run"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.startswith("healcore: error: ") and len(err.splitlines()) == 1 and len(err) < 400, err
    assert "[...]" in err  # the value shown cut short
    assert not (tmp_path / "runs").exists()
