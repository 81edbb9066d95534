"""The CLI as a user types it: help, one-line errors, and the README's example on the real minilm-l6."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def healcore(*args, store, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "healcore", "--store", str(store), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.integration  # starts processes
def test_help_explains_every_option(tmp_path):
    out = healcore("run", "--help", store=tmp_path).stdout
    for flag in ("--model", "--dataset", "--corrupt", "--method", "--lr", "--epochs", "--pooling", "--mode",
                 "--select-on", "--max-train"):
        assert flag in out
    assert "bottom:50%" in out


@pytest.mark.parametrize("args,match", [
    (["run", "--corrupt", "bottom:150%"], "0..100"),
    (["run", "--lr", "-3"], "lr=-3.0 is out of range"),
    (["run", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["run", "--epochs", "many"], "not a valid int"),
    (["run", "--model", "./missing"], "does not exist"),
    (["run", "--corrupt", "bottom:25%"], "valid: bottom:50%, bottom:100%"),
    (["run", "--bogus"], "unrecognized arguments"),
    (["run", "--compile", "fast"], "compile='fast' is not valid; choose one of off, default, reduce-overhead"),
    (["grid", "demo", "--executor", "ray", "--fuse", "4"], "fusing runs (fuse) works with the local executor only"),
])
@pytest.mark.integration  # starts processes
def test_bad_input_is_one_line_exit_2(tmp_path, args, match):
    proc = healcore(*args, store=tmp_path / "runs")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("healcore: error:") and match in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.integration  # starts processes
def test_store_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = healcore("status", store=tmp_path / "file")
    assert proc.returncode == 2 and "is a file" in proc.stderr


@pytest.mark.slow
def test_readme_example_on_real_minilm_heals_far_above_chance(tmp_path):
    """The real pretrained model on a real slice of AG News: F1 must be far above chance (25)."""
    proc = healcore("run", "--model", "minilm-l6", "--dataset", "ag_news", "--corrupt", "bottom:50%",
                    "--lr", "1e-4", "--epochs", "2", "--max-train", "600", "--max-test", "300",
                    "--feature-samples", "100", "--probe-samples", "300", "--quiet", store=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best"]["test"]["f1_weighted"] > 60
    assert summary["corruption"]["layers"] == [1, 2, 3] and summary["corruption"]["num_layers"] == 6
    assert "test weighted F1" in proc.stdout
