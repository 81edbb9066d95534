"""Bad inputs, table-driven: each gives one clear line naming the problem and the fix, from the library,
the CLI and the dashboard, and none leaves a run folder behind. Plus property-based tests of the parsers."""
import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healcore import cli
from healcore.core.config import RunConfig
from healcore.core.errors import HealcoreError
from healcore.engine.run import execute
from healcore.store.runs import RunStore

GOOD = [{"text": f"good {i}", "label": "pos"} for i in range(10)] + [{"text": f"bad {i}", "label": "neg"} for i in range(10)]


def _folder(tmp, name, train=None, test=None, raw=None, kind="csv"):
    d = tmp / name
    d.mkdir()
    for split in ("train", "test"):
        path = d / f"{split}.{kind}"
        if raw is not None:
            path.write_bytes(raw[split] if isinstance(raw, dict) else raw)
        else:
            rows = (train if split == "train" else test) or GOOD
            pd.DataFrame(rows).to_csv(path, index=False)
    return str(d)


def _model_folder(tmp, name, config):
    d = tmp / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return str(d)


def _model_copy(tmp, model, name, tokenizer_text=None, **config):
    """A copy of a model folder with its tokenizer file replaced, or its config.json saying other things."""
    import shutil

    d = tmp / name
    shutil.copytree(model, d)
    if tokenizer_text is not None:
        (d / "tokenizer.json").write_text(tokenizer_text)
    if config:
        values = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**values, **config}))
    return str(d)


ONE_MEH = GOOD + [{"text": "meh 0", "label": "meh"}]  # a class of one row, which a cap of 10 rows leaves out
LONG = "/tmp/" + "a" * 300  # longer than a file name may be
FLOATS = ("text,label\n" + "".join(f"row {i},{i / 10_001:.6f}\n" for i in range(10_000))).encode()

# (case id, function tmp_path, tiny_bert -> config overrides, expected words in the message)
CASES = [
    ("negative lr", lambda t, m: {"lr": "-1"}, "lr=-1.0 is out of range"),
    ("absurd lr", lambda t, m: {"lr": "1e9"}, "lr=1000000000.0 is out of range"),
    ("nan lr", lambda t, m: {"lr": "nan"}, "finite number"),
    ("zero epochs", lambda t, m: {"epochs": "0"}, "epochs=0 is out of range"),
    ("absurd epochs", lambda t, m: {"epochs": "1000000"}, "epochs=1000000 is out of range"),
    ("fractional epochs", lambda t, m: {"epochs": "2.5"}, "not a valid int"),
    ("zero batch", lambda t, m: {"batch_size": "0"}, "batch_size=0 is out of range"),
    ("absurd batch", lambda t, m: {"batch_size": "10000000"}, "batch_size=10000000 is out of range"),
    ("tiny max_length", lambda t, m: {"max_length": "2"}, "max_length=2 is out of range"),
    ("too many layers", lambda t, m: {"corrupt": "bottom:13"}, "has 4"),
    ("negative layers", lambda t, m: {"corrupt": "top:-1"}, "must be >= 0"),
    ("percent over 100", lambda t, m: {"corrupt": "bottom:150%"}, "0..100"),
    ("percent not whole", lambda t, m: {"corrupt": "bottom:30%"}, "valid: bottom:25%, bottom:50%"),
    ("malformed spec", lambda t, m: {"corrupt": "middle:2"}, "not a layer selection"),
    ("zero-based list", lambda t, m: {"corrupt": "0,2"}, "numbered from 1"),
    ("unknown method", lambda t, m: {"method": "melt"}, "method='melt' is not valid"),
    ("negative strength", lambda t, m: {"strength": "-1", "method": "noise", "corrupt": "top:1"}, "strength=-1.0"),
    ("zero fraction > 1", lambda t, m: {"strength": "2", "method": "zero", "corrupt": "top:1"}, "use 0..1"),
    ("shuffle one layer", lambda t, m: {"method": "shuffle", "corrupt": "top:1"}, "at least 2"),
    ("unknown dataset", lambda t, m: {"dataset": "sst3"}, "unknown dataset 'sst3'"),
    ("missing model folder", lambda t, m: {"model": "./no-such-model"}, "does not exist"),
    ("unknown hub model", lambda t, m: {"model": "nobody/no-such-model-xyz"}, "the hub cannot be reached"),
    ("remote code", lambda t, m: {"model": _model_folder(t, "rc", {"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}})},
     "trust_remote_code"),
    ("unsupported architecture", lambda t, m: {"model": _model_folder(t, "t5", {"model_type": "t5", "num_layers": 2, "d_model": 32, "num_heads": 2, "vocab_size": 100})},
     "unsupported architecture 't5'"),
    ("config not json", lambda t, m: {"model": _model_folder(t, "broken", {}) and (t / "broken" / "config.json").write_text("{") and str(t / "broken")},
     "not valid JSON"),
    ("empty csv", lambda t, m: {"dataset": _folder(t, "e", raw=b"")}, "is empty"),
    ("header only", lambda t, m: {"dataset": _folder(t, "h", raw=b"text,label\n")}, "has no rows"),
    ("missing text column", lambda t, m: {"dataset": _folder(t, "mt", train=[{"body_text": "a", "label": "x"}], test=[{"body_text": "a", "label": "x"}])},
     "has no text column by a usual name"),
    ("missing label column", lambda t, m: {"dataset": _folder(t, "ml", train=[{"text": "a"}], test=[{"text": "a"}])},
     "has no label column by a usual name"),
    ("one class", lambda t, m: {"dataset": _folder(t, "oc", train=GOOD[:10], test=GOOD[:10])}, "only one class"),
    ("unseen test labels", lambda t, m: {"dataset": _folder(t, "ut", test=GOOD + [{"text": "x", "label": "meh"}])},
     "never seen in train"),
    ("non-utf8", lambda t, m: {"dataset": _folder(t, "nu", raw={"train": b"text,label\n\xff\xfe,pos\nok,neg\n", "test": b"text,label\nok,pos\n"})},
     "not UTF-8"),
    ("malformed jsonl", lambda t, m: {"dataset": _folder(t, "mj", raw=b'{"text": ', kind="jsonl")}, "could not be read"),
    ("malformed parquet", lambda t, m: {"dataset": _folder(t, "mp", raw=b"PAR1 not really", kind="parquet")}, "could not be read"),
    ("only empty texts", lambda t, m: {"dataset": _folder(t, "et", train=[{"text": "", "label": "a"}, {"text": " ", "label": "b"}])},
     "no usable rows"),
    ("empty label", lambda t, m: {"dataset": _folder(t, "el", raw={"train": b"text,label\nhi,\nyo,neg\n", "test": b"text,label\nx,neg\n"})},
     "empty label"),
    ("damaged tokenizer", lambda t, m: {"model": _model_copy(t, m, "gt", tokenizer_text="garbage{")},
     "cannot load the tokenizer of model"),
    ("config claims more layers", lambda t, m: {"model": _model_copy(t, m, "deep", num_hidden_layers=48)},
     "config.json claims 48 layers, its weights hold 4"),
    ("config claims another width", lambda t, m: {"model": _model_copy(t, m, "wide", hidden_size=768,
                                                                         num_attention_heads=12)},
     "config.json claims a width of 768"),
    ("class left out of training", lambda t, m: {"dataset": _folder(t, "cl", train=ONE_MEH, test=ONE_MEH),
                                                 "max_train": "10"},
     "('meh'; 1 rows) never appear in train after the caps"),
    ("unknown hub dataset offline", lambda t, m: {"dataset": "hub:nobody/no-such-dataset-xyz"},
     "is not in this machine's datasets cache"),
    ("column that does not exist", lambda t, m: {"dataset": _folder(t, "nc"), "label_column": "stars"},
     "has no column 'stars' (its columns: text, label)"),
    ("fractional labels", lambda t, m: {"dataset": _folder(t, "fl", raw=FLOATS)},
     "label column 'label' of"),
    ("split that does not exist", lambda t, m: {"dataset": _folder(t, "ns"), "test_split": "dev"},
     "has no 'dev' file (its files: test, train;"),
    ("model name too long", lambda t, m: {"model": LONG}, "cannot be looked up (File name too long)"),
    ("dataset name too long", lambda t, m: {"dataset": LONG}, "unknown dataset '/tmp/aaaa"),
]


@pytest.fixture()
def defaults(tiny_bert):
    return {"model": tiny_bert, "dataset": "sst2", "max_train": "100", "max_test": "50", "epochs": "1"}


@pytest.mark.parametrize("name,make,expected", CASES, ids=[c[0] for c in CASES])
def test_library_and_cli_give_one_line_and_write_nothing(name, make, expected, tmp_path, tiny_bert, defaults, capsys):
    overrides = make(tmp_path, tiny_bert)
    values = {**defaults, **overrides}
    store = RunStore(tmp_path / "runs")
    with pytest.raises(HealcoreError) as info:
        execute(RunConfig.from_dict(values), store)
    assert expected in str(info.value) and "\n" not in str(info.value)
    argv = ["--store", str(store.root), "run", "--quiet"]
    for k, v in values.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("healcore: error:") and expected in err and len(err.splitlines()) == 1
    assert store.run_ids() == [] and not any((store.root).glob("*/config.json"))


@pytest.mark.parametrize("name,make,expected", [c for c in CASES if c[0] in
                                                ("negative lr", "percent not whole", "unknown dataset", "one class",
                                                 "unsupported architecture", "missing model folder")],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_dashboard_explains_the_same_mistakes(name, make, expected, tmp_path, tiny_bert, defaults, monkeypatch):
    """The Launch page runs the same checks on a grid before offering Start."""
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", f"{tiny_bert}:{tmp_path}")
    values = {**defaults, **make(tmp_path, tiny_bert)}
    spec = {"name": "bad", "models": [values.pop("model")], "datasets": [values.pop("dataset")],
            "corruption": {"sides": ["bottom"], "levels": [0]}, "base": values}
    if "corrupt" in values:
        spec["corruption"] = {"sides": ["bottom"], "levels": [values.pop("corrupt").split(":")[1]]}
    (tmp_path / "bad.yaml").write_text(json.dumps(spec))
    at = AppTest.from_file(str(ROOT / "pages" / "1_Launch.py"), default_timeout=120)
    monkeypatch.setattr("healcore.grids.spec.PRESETS_DIR", tmp_path)
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "cannot run" in errors and (expected in errors or "no whole number" in errors or "not a whole" in errors)
    assert not any(b.label == "Start" and not b.disabled for b in at.button)  # nothing to start
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/config.json"))


@pytest.mark.parametrize("damage,expected", [
    ("pickled", "has only pickled weights (pytorch_model.bin)"),
    ("truncated", "model.safetensors is damaged (truncated"),
    ("missing", "has no model.safetensors"),
])
def test_unloadable_weights_are_found_before_any_run_folder(tiny_bert, tmp_path, capsys, damage, expected):
    """A model folder whose weights cannot be loaded fails the preflight with one line, and no folder is written
    (found only when loading, it used to leave a failed run behind)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    weights = folder / "model.safetensors"
    if damage == "pickled":
        weights.rename(folder / "pytorch_model.bin")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    store = RunStore(tmp_path / "runs")
    with pytest.raises(HealcoreError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        execute(RunConfig(model=str(folder), dataset="sst2", max_train=100, max_test=50, epochs=1), store)
    assert cli.main(["--store", str(store.root), "run", "--quiet", "--model", str(folder), "--max-train", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert store.run_ids() == []


def test_store_and_run_id_mistakes(tmp_path, capsys):
    from healcore.core.errors import StoreError

    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        RunStore(tmp_path / "file")
    store = RunStore(tmp_path / "runs")
    for bad in ("../etc", "a/../../b", "..", "x/y"):
        with pytest.raises(StoreError, match="invalid run id"):
            store.path(bad)
    assert cli.main(["--store", str(store.root), "cancel", "../etc"]) == 2
    assert "invalid run id" in capsys.readouterr().err


def test_grid_file_mistakes(tmp_path, capsys):
    bad_yaml = tmp_path / "g.yaml"
    bad_yaml.write_text("models: [unclosed\n")
    assert cli.main(["--store", str(tmp_path / "r"), "grid", str(bad_yaml), "--dry-run"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert cli.main(["--store", str(tmp_path / "r"), "grid", "no-such-preset", "--dry-run"]) == 2
    assert "neither a file nor a preset" in capsys.readouterr().err
    unknown = tmp_path / "u.yaml"
    unknown.write_text("models: [minilm-l6]\nlearning_rates: [1e-5]\n")
    assert cli.main(["--store", str(tmp_path / "r"), "grid", str(unknown), "--dry-run"]) == 2
    assert "'learning_rates'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- property-based
from healcore.core.errors import CorruptionSpecError
from healcore.core.layers import parse_layers  # noqa: E402


@given(st.text(max_size=30))
def test_layer_parser_accepts_or_explains_any_text(text):
    try:
        sel = parse_layers(text)
    except CorruptionSpecError as err:
        assert "\n" not in str(err)
        return
    assert sel.kind in ("none", "bottom", "top", "list")


@given(st.sampled_from(["bottom", "top"]), st.integers(0, 48), st.integers(1, 48))
def test_counts_resolve_to_contiguous_blocks_or_explain(side, k, L):
    try:
        idx = parse_layers(f"{side}:{k}").resolve(L)
    except CorruptionSpecError:
        assert k > L
        return
    assert len(idx) == k and idx == sorted(idx) and all(0 <= i < L for i in idx)
    if k:
        assert (idx[0] == 0) if side == "bottom" else (idx[-1] == L - 1)


@given(st.sampled_from([25, 50, 75, 100]), st.sampled_from([6, 12, 24]))
def test_paper_percentages(pct, L):
    try:
        idx = parse_layers(f"bottom:{pct}%").resolve(L)
    except CorruptionSpecError as err:
        assert (pct * L) % 100 and "valid:" in str(err)
        return
    assert len(idx) == pct * L // 100


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.sampled_from(["csv", "jsonl", "parquet", "csv.gz"]))
def test_data_reader_never_crashes_on_garbage(tmp_path, data, kind):
    from healcore.core.errors import DataError
    from healcore.core.sources import read_table

    path = tmp_path / f"train.{kind}"
    path.write_bytes(data)
    try:
        df = read_table(path)
    except DataError as err:
        assert "\n" not in str(err)
        return
    assert len(df) > 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=300), st.integers(0, 300))
def test_stratified_sample_is_exact_and_proportional(labels, n):
    import numpy as np

    from healcore.core.data import stratified_take

    labels = np.array(labels)
    idx = stratified_take(labels, n, np.random.default_rng(0))
    assert len(idx) == min(n, len(labels)) and len(set(idx)) == len(idx)
    if n < len(labels):
        for c in np.unique(labels):
            share = (labels == c).sum() * n / len(labels)
            assert abs((labels[idx] == c).sum() - share) < 1 + 1e-9
