"""The package's shape holds: only engine/ imports torch at module level, planning any preset stays torch-free, and a
wheel (not the source tree) installs and runs."""
import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "healcore"
HEAVY = ("torch", "transformers", "peft", "safetensors.torch", "healcore.engine")


def top_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import a module runs when it is imported: its body, and the bodies of module-level
    if/try/with blocks; never a function's."""
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.lineno, node.module))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return found


def test_only_the_engine_imports_torch_at_module_level():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "engine":
            continue
        for line, module in top_level_imports(path):
            if any(module == h or module.startswith(h + ".") for h in HEAVY):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_the_walker_sees_a_module_level_torch_import(tmp_path):
    """The rule's own check: an import at module level (in a try block too) is found, one in a function is not."""
    module = tmp_path / "m.py"
    module.write_text("try:\n    import torch\nexcept ImportError:\n    pass\n\ndef f():\n    import transformers\n")
    assert top_level_imports(module) == [(2, "torch")]


def test_every_package_has_one_job_said_in_its_docstring():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 60, init


@pytest.mark.integration  # starts processes
def test_planning_every_preset_imports_no_torch(tmp_path):
    """What the Launch page does with each preset (expand, plan against a store, check, price), in a fresh process
    with an empty model cache: minilm-l3, derived from minilm-l6 on first load, is planned from its base's facts
    without being written (which would need torch)."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from healcore.grids.plan import make_plan
from healcore.grids.spec import preset_names
from healcore.store.runs import RunStore
store = RunStore({str(tmp_path / "runs")!r})
for name in preset_names():
    p = make_plan(name, store, {{"max_train": 50, "max_test": 20}})
    assert p.grid.configs, name
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
assert not heavy, heavy
print("torch-free", len(preset_names()))
"""
    env = {**os.environ, "HEALCORE_MODEL_CACHE": str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0 and "torch-free" in out.stdout, out.stderr[-3000:]
    assert not (tmp_path / "empty-cache").exists()  # nothing was derived


def test_a_wheel_installs_with_every_package_and_runs(tmp_path, tiny_bert):
    """A non-editable install: the wheel holds every subpackage and the presets, and `healcore` runs from it (not
    from the source tree) in a fresh virtual environment that borrows the installed dependencies."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("healcore-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    away = Path(tempfile.mkdtemp(dir=tmp_path))  # not the repository: the source tree must not be importable
    where = subprocess.run([str(py), "-c", "import healcore, healcore.grids.spec as s; print(healcore.__file__); "
                            "print(len(s.preset_names()))"], capture_output=True, text=True, cwd=away, check=True)
    location, presets = where.stdout.split()
    assert str(venv) in location and int(presets) >= 10, where.stdout
    helped = subprocess.run([str(venv / "bin" / "healcore"), "--help"], capture_output=True, text=True, cwd=away)
    assert helped.returncode == 0 and "healcore" in helped.stdout
    ran = subprocess.run([str(venv / "bin" / "healcore"), "--store", str(tmp_path / "runs"), "run", "--model",
                          tiny_bert, "--epochs", "1", "--max-train", "60", "--max-test", "30", "--max-length", "32",
                          "--feature-samples", "10", "--probe-samples", "20", "--analysis-samples", "10", "--quiet"],
                         capture_output=True, text=True, cwd=away, timeout=600,
                         env={**os.environ, "HEALCORE_DATA": str(ROOT.parent / "shared" / "data")})
    assert ran.returncode == 0 and "test weighted F1" in ran.stdout, ran.stderr[-2000:]
    dry = subprocess.run([str(venv / "bin" / "healcore"), "--store", str(tmp_path / "runs"), "grid", "demo",
                          "--dry-run"], capture_output=True, text=True, cwd=away, timeout=300)
    assert dry.returncode == 0 and "grid demo:" in dry.stdout, dry.stderr[-2000:]


@pytest.mark.parametrize("module", ["healcore.results", "healcore.grids.plan", "healcore.grids.launch",
                                    "healcore.store.runs", "healcore.cli"])
@pytest.mark.integration  # starts processes
def test_torch_free_modules_import_without_torch(module):
    out = subprocess.run([sys.executable, "-c", f"import sys, {module}; "
                          "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_data_options_have_one_list():
    """config.DATA_OPTION_FIELDS is the one list of a dataset's column and split options: sources.DataOptions has
    exactly those fields, in that order, and the CLI and Launch read the list rather than spelling it again."""
    from dataclasses import fields

    from healcore.core.config import DATA_OPTION_FIELDS
    from healcore.core.sources import OPTION_FIELDS, DataOptions

    assert tuple(f.name for f in fields(DataOptions)) == DATA_OPTION_FIELDS == OPTION_FIELDS
    spelled = '"text_column", "text_pair_column", "label_column"'
    for path, times in (("healcore/cli.py", 0), ("pages/1_Launch.py", 0), ("healcore/core/config.py", 1)):
        assert (ROOT / path).read_text().count(spelled) == times, path


# What each package may import at module level: the order docs/ARCHITECTURE.md draws (core <- store <- results <-
# grids <- cli; the engine uses core, store and results.analysis). A function-level import reaches further (the
# CLI's run, a grid worker) and is not counted.
MAY_IMPORT = {"core": {"core"}, "store": {"core", "store"}, "results": {"core", "store", "results"},
              "grids": {"core", "store", "results", "grids"},
              "engine": {"core", "store", "results.analysis", "engine"}}


def test_each_package_imports_only_what_the_architecture_draws():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        package = path.relative_to(PACKAGE).parts[0]
        if package not in MAY_IMPORT:
            continue
        for line, module in top_level_imports(path):
            if not module.startswith("healcore.") or module == "healcore":
                continue
            target = module.removeprefix("healcore.")
            if not any(target == ok or target.startswith(ok + ".") for ok in MAY_IMPORT[package]):
                offenders.append(f"{path.relative_to(ROOT)}:{line} ({package}) imports {module}")
    assert not offenders, "\n".join(offenders)
