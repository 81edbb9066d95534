"""Compiled training steps (`compile=default`): a compiled run, single or fused, is the run it would be eager.

torch.compile on CPU (inductor) is what these tests can check here; `reduce-overhead` adds CUDA graphs on CUDA
only. Each test keeps a single batch shape (max_length 16, batches that divide the training rows), so each
compiles once (about 20-30 s on 2 cores)."""
import pytest

from healcore.core.errors import ConfigError
from healcore.engine.compiled import WIDTH_MULTIPLE
from healcore.engine.fused import execute_fused
from healcore.engine.run import execute
from healcore.store.runs import RunStore

from conftest import assert_same_epochs, one_shape_runs as runs


def captured_graphs() -> int:
    """Graphs torch.compile has captured in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_a_compiled_run_matches_the_eager_run(tiny_bert_no_dropout, tmp_path):
    eager, compiled = RunStore(tmp_path / "eager"), RunStore(tmp_path / "compiled")
    for cfg in runs(tiny_bert_no_dropout):
        execute(cfg, eager)
        before = captured_graphs()
        execute(cfg.replace(compile="default"), compiled)
        assert captured_graphs() > before or cfg.corrupt != "none"  # the first run compiles; the second reuses it
        assert_same_epochs(eager, compiled, cfg.run_id)  # compile is not part of the run id
        assert compiled.summary(cfg.run_id)["config"]["compile"] == "default"


def test_a_compiled_fused_group_matches_its_runs_trained_alone(tiny_bert_no_dropout, tmp_path):
    configs = runs(tiny_bert_no_dropout)
    alone, fused = RunStore(tmp_path / "alone"), RunStore(tmp_path / "fused")
    for cfg in configs:
        execute(cfg, alone)
    before = captured_graphs()
    # reduce-overhead: on CPU inductor's kernels without CUDA graphs, with the stacked weights marked static
    results = execute_fused([c.replace(compile="reduce-overhead") for c in configs], fused)
    assert captured_graphs() > before
    assert [r["state"] for r in results] == ["completed"] * 2
    for cfg in configs:
        assert_same_epochs(alone, fused, cfg.run_id)
        assert sorted(fused.summary(cfg.run_id)["fused_with"]) == [c.run_id for c in configs if c is not cfg]


def test_compiled_batches_are_padded_to_few_widths():
    import numpy as np

    from healcore.engine.batching import Encoded, collate

    lengths = np.array([3, 17, 9])
    enc = Encoded(np.arange(lengths.sum(), dtype=np.int32), None, np.concatenate([[0], np.cumsum(lengths)]),
                  np.zeros(3, dtype=np.int64))
    assert collate(enc, np.array([0, 2]), 0, "cpu", WIDTH_MULTIPLE)["input_ids"].shape == (2, WIDTH_MULTIPLE)
    batch = collate(enc, np.array([0, 1]), 0, "cpu", WIDTH_MULTIPLE)
    assert batch["input_ids"].shape == (2, 2 * WIDTH_MULTIPLE)
    assert batch["attention_mask"].sum().item() == 20  # the padding is masked
    assert collate(enc, np.array([0, 1]), 0, "cpu")["input_ids"].shape == (2, 17)  # eager: the longest example


def test_compile_is_refused_where_it_is_not_supported():
    from healcore.core.config import RunConfig

    with pytest.raises(ConfigError, match="compile=off for mode=lora"):
        RunConfig(mode="lora").replace(compile="default")
    with pytest.raises(ConfigError, match="compile='fast' is not valid"):
        RunConfig().replace(compile="fast")


def test_the_report_says_which_runs_compiled_their_step():
    import pandas as pd

    from healcore.results.report import compiled_steps

    assert compiled_steps(pd.DataFrame({"compile": ["off", "reduce-overhead", "reduce-overhead"]})) == \
        "; training step compiled with torch.compile: reduce-overhead (2 of 3 runs)"
    assert compiled_steps(pd.DataFrame({"compile": ["off", "off"]})) == ""
    assert compiled_steps(pd.DataFrame({"lr": [1e-5]})) == ""  # a store from before the setting existed


def test_a_compiled_fused_group_drops_a_diverging_member_and_goes_on(tiny_bert_no_dropout, tmp_path, monkeypatch):
    import torch

    from healcore.engine.fused import StackedAdam

    configs = runs(tiny_bert_no_dropout)
    alone = RunStore(tmp_path / "alone")
    execute(configs[0], alone)
    real_step, steps = StackedAdam.step, [0]

    def second_member_breaks(self, factor):  # after the third step, the second member's weights turn NaN
        real_step(self, factor)
        steps[0] += 1
        if steps[0] == 3:
            with torch.no_grad():
                for p in self.params.values():
                    p[1].fill_(float("nan"))

    monkeypatch.setattr(StackedAdam, "step", second_member_breaks)
    store = RunStore(tmp_path / "fused")
    results = {r["run_id"]: r for r in execute_fused([c.replace(compile="reduce-overhead") for c in configs], store)}
    assert results[configs[1].run_id]["state"] == "failed" and "lower the learning rate" in results[configs[1].run_id]["error"]
    assert results[configs[0].run_id]["state"] == "completed"
    assert_same_epochs(alone, store, configs[0].run_id)  # the member that goes on trains as it would alone
