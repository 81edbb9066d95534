"""Shared fixtures: tiny random BERT/DistilBERT models saved as folders, and the shared offline data; and the two
layers of the suite.

Every test is `unit` or `integration`: a test that trains (a tiny model fixture) or lives in a module whose every
test trains or starts processes is integration here; any other test that starts a process (a grid, the CLI, a
wheel install) says so with `@pytest.mark.integration`, as do `slow` and `browser` tests. The rest, pure functions
and pages rendered over synthetic stores, is the quick layer:

    python -m pytest -q -m unit        # the contributor's loop, about 70 s on 2 cores
    python -m pytest -q                # everything (the README's command, and CI's)
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the shared offline data beside the checkout; HEALCORE_TEST_DATA names another copy (a GPU machine's carried one)
SHARED_DATA = Path(os.environ.get("HEALCORE_TEST_DATA") or ROOT.parent / "shared" / "data").resolve()
# The device the numerics tests train on: cpu everywhere (CI has no GPU); HEALCORE_TEST_DEVICE=cuda runs the
# same tests on a GPU machine (see docs/PERFORMANCE.md).
TEST_DEVICE = os.environ.get("HEALCORE_TEST_DEVICE", "cpu")


# Fixtures that train models, and modules whose every test starts processes or trains.
TRAINING_FIXTURES = {"tiny_bert", "tiny_bert_no_dropout", "tiny_distilbert", "tiny_store", "tiny_families"}
INTEGRATION_MODULES = {"test_browser", "test_ray_cluster", "test_reliability", "test_workers", "test_fused",
                       "test_compiled", "test_run", "test_fast_path"}


def pytest_ignore_collect(collection_path, config):
    """`-m unit` does not even import the modules whose every test is integration (they import torch)."""
    if config.getoption("markexpr", "") == "unit" and collection_path.stem in INTEGRATION_MODULES:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        heavy = (TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
                 or item.module.__name__.rsplit(".", 1)[-1] in INTEGRATION_MODULES
                 or item.get_closest_marker("slow") or item.get_closest_marker("browser")
                 or item.get_closest_marker("integration"))
        item.add_marker(pytest.mark.integration if heavy else pytest.mark.unit)


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HEALCORE_DATA"] = str(SHARED_DATA)  # session fixtures run before monkeypatch exists
    # derived models (minilm-l3) go to a fresh folder, not the user's cache
    os.environ.setdefault("HEALCORE_MODEL_CACHE", tempfile.mkdtemp(prefix="healcore-models-"))
    # Under pytest-xdist each worker gets its share of the cores, for torch here and for the processes its tests
    # start (they inherit the variable): two workers each running torch on every core would oversubscribe them.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(autouse=True)
def _shared_data(monkeypatch):
    """Every test reads registry datasets from ../shared/data unless it changes HEALCORE_DATA itself."""
    monkeypatch.setenv("HEALCORE_DATA", str(SHARED_DATA))


def _save_tiny(folder: Path, config) -> Path:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from healcore.engine.models import resolve_model_path

    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    from transformers import BertConfig

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256)
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-bert"), cfg))


@pytest.fixture(scope="session")
def tiny_bert_no_dropout(tmp_path_factory) -> str:
    """The tiny BERT without dropout: runs that must match bit for bit across training paths (fused vs single)."""
    from transformers import BertConfig

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-bert-nodrop"), cfg))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> str:
    from transformers import DistilBertConfig

    cfg = DistilBertConfig(vocab_size=30522, dim=32, n_layers=4, n_heads=2, hidden_dim=64,
                           max_position_embeddings=256)
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-distilbert"), cfg))


# One tiny random-weight model per family of core/families.py (model_type -> its sizes), 4 layers each, with
# minilm-l6's vocabulary: every family's layers, norms, attention and pooling, without the network.
TINY_FAMILIES = {
    "bert": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64),
    "roberta": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=600, pad_token_id=0, type_vocab_size=1),
    "xlm-roberta": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=600, pad_token_id=0, type_vocab_size=1),
    "electra": dict(hidden_size=32, embedding_size=16, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=64),
    "deberta-v2": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64),
    "distilbert": dict(dim=32, n_layers=4, n_heads=2, hidden_dim=64),
    "albert": dict(hidden_size=32, embedding_size=16, num_hidden_layers=4, num_attention_heads=2,
                   intermediate_size=64),
    "modernbert": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102),
    "gpt2": dict(n_embd=32, n_layer=4, n_head=2, bos_token_id=101, eos_token_id=102),
    "gpt_neox": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64),
    "llama": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64),
    "mistral": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=64),
    "opt": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32,
                pad_token_id=0, bos_token_id=101, eos_token_id=102),
    "gemma": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, head_dim=8),
    "gemma2": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=64, head_dim=8),
    "gemma3_text": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=64, head_dim=8),
}


@pytest.fixture(scope="session")
def tiny_families(tmp_path_factory) -> dict[str, str]:
    """model_type -> a folder holding a tiny random-weight model of it, saved with save_pretrained."""
    from transformers import AutoConfig

    root = tmp_path_factory.mktemp("tiny-families")
    return {kind: str(_save_tiny(root / kind, AutoConfig.for_model(kind, vocab_size=30522, **sizes)))
            for kind, sizes in TINY_FAMILIES.items()}


@pytest.fixture()
def store(tmp_path):
    from healcore.store.runs import RunStore

    return RunStore(tmp_path / "runs")


def tiny_config(model: str, **overrides):
    """A run that takes a few seconds on CPU: 200 SST-2 train rows, 100 test rows, 2 epochs."""
    from healcore.core.config import RunConfig

    base = dict(model=model, dataset="sst2", epochs=2, batch_size=16, max_length=64, max_train=200, max_test=100,
                lr=1e-3, feature_samples=50, probe_samples=100)
    return RunConfig.from_dict({**base, **overrides})


def fusable_members(model, **overrides):
    """Three runs that may fuse: different corruption and learning rate, the same data, seed and schedule."""
    base = dict(epochs=2, max_train=160, max_test=60, feature_samples=20, probe_samples=40, analysis_samples=20,
                checkpoint_every=0, **overrides)
    return [tiny_config(model, corrupt="none", lr=1e-3, **base), tiny_config(model, corrupt="bottom:1", lr=3e-3, **base),
            tiny_config(model, corrupt="top:2", lr=2e-3, **base)]


def one_shape_runs(model, **overrides):
    """Runs of one batch shape, for compiled steps: 180 training rows in batches of 18, every example cut to
    compiled.WIDTH_MULTIPLE tokens, so each compiles once. In fp32: on a CPU with bf16 instructions `auto` means
    bf16 autocast, where compiled kernels round differently from eager ones (0.4% of the loss after an epoch) and
    the comparison would test rounding, not compilation."""
    from healcore.engine.compiled import WIDTH_MULTIPLE

    base = dict(epochs=2, max_train=200, max_test=60, max_length=WIDTH_MULTIPLE, batch_size=18, feature_samples=20,
                probe_samples=40, analysis_samples=20, checkpoint_every=0, precision="fp32", **overrides)
    return [tiny_config(model, corrupt="none", lr=1e-3, **base), tiny_config(model, corrupt="bottom:1", lr=3e-3, **base)]


def assert_same_epochs(eager, compiled, run_id: str) -> None:
    a, c = eager.epochs(run_id), compiled.epochs(run_id)
    assert [r["epoch"] for r in c] == [1, 2]
    for ra, rc in zip(a, c):
        assert rc["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4, rel=1e-4)
        for split in ("validation", "test"):
            assert rc[split]["f1_weighted"] == pytest.approx(ra[split]["f1_weighted"], abs=1e-4), (run_id, split)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_bert):
    """A real store from real tiny runs: clean, bottom/top 1 and 2 of 4 layers, all 4; 3 seeds; 2 lrs on
    one setting. Shared by results and dashboard tests."""
    from healcore.engine.run import execute
    from healcore.grids.spec import expand
    from healcore.store.runs import RunStore

    root = tmp_path_factory.mktemp("tiny-store") / "runs"
    spec = {"name": "tiny", "models": [tiny_bert], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom", "top"], "levels": [0, 1, 2, 4]}, "lrs": [1e-3], "seeds": [0, 1, 2],
            "base": {"epochs": 2, "batch_size": 16, "max_length": 48, "max_train": 120, "max_test": 60,
                     "feature_samples": 40, "probe_samples": 60}}
    store = RunStore(root)
    grid = expand(spec)
    extra = grid.configs[0].replace(lr=3e-3)  # a second learning rate for the clean cell
    for cfg in grid.configs + [extra]:
        execute(cfg, store)
    return root


@pytest.fixture()
def datasets_cache(tmp_path, monkeypatch):
    """A datasets cache of the test's own, and a hub that does not answer (as on this machine and in CI)."""
    import datasets

    import healcore.core.model_facts as facts

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(facts, "hub_reachable", lambda timeout=3.0: False)
    return cache


def prefill_datasets_cache(cache: Path, repo_id: str, dataset_dict, scratch: Path) -> None:
    """Leave `dataset_dict` in the datasets cache as downloading hub dataset `repo_id` would
    (<namespace>___<name>/default/0.0.0/<hash>/<name>-<split>.arrow): written as a hub repository's parquet files,
    built into the cache by the real load_dataset, and placed under the hub id's name."""
    import shutil

    import datasets

    name = repo_id.split("/")[-1]
    repo = scratch / f"repo-of-{name}"
    (repo / "data").mkdir(parents=True)
    for split, part in dataset_dict.items():
        part.to_parquet(str(repo / "data" / f"{split}-00000-of-00001.parquet"))
    datasets.load_dataset(str(repo), cache_dir=str(scratch / "build-cache"))
    built = next(p.parent for p in (scratch / "build-cache").rglob("dataset_info.json"))
    target = cache / "___".join(repo_id.split("/")) / "default" / "0.0.0" / built.name
    shutil.copytree(built, target)
    for arrow in target.glob(f"{repo.name}-*.arrow"):
        arrow.rename(target / arrow.name.replace(f"{repo.name}-", f"{name}-"))


def wait_for(predicate, timeout=600, every=0.2, proc=None) -> bool:
    """Poll until predicate() holds. Generous (a loaded 2-core machine can take minutes to reach a first
    checkpoint), but never longer than `proc` lives: a process that ended without it has failed the wait."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(every)
    return False


def kill_grid(proc, store) -> None:
    """SIGKILL a grid started with start_new_session=True and every process of its group (a crash), then wait
    until its runs no longer read as running: wait() reaps the grid only, and its workers (its children) can take
    a moment longer to die, during which their runs still rightly read as running."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(store.status(r)["effective_state"] == "running" for r in store.run_ids()),
             timeout=30, every=0.1)
