"""Horizontally fused runs: K members trained as one model give each member the metrics it gets alone, write
the same run folders, drop a diverging member, and resume after kill -9 like single runs."""
import subprocess
import sys

import numpy as np
import pytest

from healcore.engine.fused import execute_fused
from healcore.engine.run import execute
from healcore.core.fusion import fusion_groups
from healcore.store.runs import RunStore

from conftest import ROOT, fusable_members as members, kill_grid, tiny_config, wait_for


def test_fusion_groups_keep_runs_that_differ_only_in_corruption_and_lr_together():
    from healcore.core.config import RunConfig

    a = RunConfig(corrupt="bottom:1", lr=2e-5)
    groups = fusion_groups([a, a.replace(corrupt="top:2", lr=5e-5), a.replace(seed=1), a.replace(mode="linear_probe"),
                            a.replace(corrupt="top:1")], fuse=2)
    assert [[c.corrupt for c in g] for g in groups] == [["bottom:1", "top:2"], ["top:1"], ["bottom:1"], ["bottom:1"]]
    assert [g[0].seed for g in groups] == [0, 0, 1, 0] and groups[-1][0].mode == "linear_probe"


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_fused_members_match_their_runs_trained_alone(tiny_bert_no_dropout, tmp_path, precision, tolerance):
    configs = members(tiny_bert_no_dropout, precision=precision)
    alone, fused = RunStore(tmp_path / "alone"), RunStore(tmp_path / "fused")
    for cfg in configs:
        execute(cfg, alone)
    results = execute_fused(configs, fused)
    assert [r["state"] for r in results] == ["completed"] * 3
    for cfg in configs:
        a, f = alone.epochs(cfg.run_id), fused.epochs(cfg.run_id)
        assert [r["epoch"] for r in f] == [1, 2]
        for ra, rf in zip(a, f):
            # bf16 rounds differently in a batched matmul: losses within the fast path's bf16 tolerance; in fp32
            # every metric agrees (in bf16 a prediction or two flips on these 16 validation rows)
            assert rf["train_loss"] == pytest.approx(ra["train_loss"], abs=tolerance, rel=tolerance)
            if precision == "fp32":
                for split in ("validation", "test"):
                    for k in ("accuracy", "f1_weighted", "f1_macro"):
                        assert rf[split][k] == pytest.approx(ra[split][k], abs=1e-4), (cfg.run_id, split, k)
        sa, sf = alone.summary(cfg.run_id), fused.summary(cfg.run_id)
        assert sorted(sf["fused_with"]) == sorted(c.run_id for c in configs if c is not cfg)
        assert set(sf) - {"fused_with"} == set(sa)  # the same summary, plus fused_with
        files_a = sorted(p.relative_to(alone.files(cfg.run_id).dir).as_posix()
                         for p in alone.files(cfg.run_id).dir.rglob("*") if p.is_file())
        files_f = sorted(p.relative_to(fused.files(cfg.run_id).dir).as_posix()
                         for p in fused.files(cfg.run_id).dir.rglob("*") if p.is_file())
        assert files_a == files_f


def test_a_diverging_member_is_dropped_and_the_others_go_on(tiny_bert_no_dropout, tmp_path, monkeypatch):
    import healcore.engine.train as train

    configs = members(tiny_bert_no_dropout)
    real, calls = train.cross_entropy, [0]

    def second_member_diverges(logits, labels):  # fused.py takes each member's loss in member order
        calls[0] += 1
        loss = real(logits, labels)
        # the second of three losses per step, through the first epoch (144 training rows / batch 16 = 9 steps),
        # at whose end it is dropped
        return loss * float("nan") if calls[0] <= 27 and calls[0] % 3 == 2 else loss

    monkeypatch.setattr(train, "cross_entropy", second_member_diverges)
    store = RunStore(tmp_path / "runs")
    results = {r["run_id"]: r for r in execute_fused(configs, store)}
    monkeypatch.setattr(train, "cross_entropy", real)
    assert results[configs[1].run_id]["state"] == "failed" and "lower the learning rate" in results[configs[1].run_id]["error"]
    assert store.status(configs[1].run_id)["state"] == "failed"
    for cfg in (configs[0], configs[2]):
        assert results[cfg.run_id]["state"] == "completed" and [e["epoch"] for e in store.epochs(cfg.run_id)] == [1, 2]
        assert store.summary(cfg.run_id)["fused_with"] == [c.run_id for c in configs if c not in (cfg, configs[1])]


def test_a_fused_group_resumes_after_kill_9_like_a_single_run(tiny_bert_no_dropout, tmp_path):
    import yaml

    spec = {"name": "fz", "models": [tiny_bert_no_dropout], "datasets": ["sst2"],
            "corruption": {"sides": ["bottom"], "levels": [0, 1, 2]}, "lrs": [1e-3], "seeds": [0],
            "base": {"epochs": 3, "batch_size": 8, "max_length": 48, "max_train": 1200, "max_test": 60,
                     "feature_samples": 20, "probe_samples": 40, "analysis_samples": 0, "checkpoint_every": 1}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))

    def grid(store, **kw):
        return subprocess.Popen([sys.executable, "-m", "healcore", "--store", str(store), "grid", str(tmp_path / "g.yaml"),
                                 "--fuse", "3"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, **kw)

    reference = grid(tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.stdout.read()
    store = RunStore(tmp_path / "runs")
    proc = grid(store.root)
    def into_epoch_2() -> bool:  # every member checkpointed epoch 1 and is into epoch 2: kill everything
        ids = store.run_ids()
        return len(ids) == 3 and all((store.files(r).checkpoints / "latest.json").is_file() for r in ids) and \
            all((store.status(r).get("progress") or {}).get("epoch") == 2 for r in ids)

    assert wait_for(into_epoch_2, timeout=300, proc=proc)

    kill_grid(proc, store)
    states = {r: store.status(r)["effective_state"] for r in store.run_ids()}
    assert set(states.values()) == {"interrupted"}, states
    again = grid(store.root)
    assert again.wait(timeout=600) == 0, again.stdout.read()
    ref = RunStore(tmp_path / "reference")
    for run_id in store.run_ids():
        assert "resumed from the checkpoint of epoch 1" in store.files(run_id).log.read_text()
        assert store.status(run_id)["attempt"] == 2
        assert [e["test"]["f1_weighted"] for e in store.epochs(run_id)] == \
            [e["test"]["f1_weighted"] for e in ref.epochs(run_id)]
        assert np.allclose(store.summary(run_id)["losses"], ref.summary(run_id)["losses"], atol=1e-6)


def test_a_group_larger_than_free_memory_trains_as_smaller_groups(tiny_bert_no_dropout, tmp_path):
    from healcore.core.fusion import MEMORY_SHARE, member_bytes

    configs = members(tiny_bert_no_dropout)
    room_for_two = int(2.5 * member_bytes(configs[0]) / MEMORY_SHARE)
    store = RunStore(tmp_path / "runs")
    results = execute_fused(configs, store, free_bytes=room_for_two)
    assert [r["state"] for r in results] == ["completed"] * 3
    assert store.summary(configs[0].run_id)["fused_with"] == [configs[1].run_id]
    assert store.summary(configs[2].run_id)["fused_with"] == []  # the third trained in a group of its own


def test_a_members_planned_memory_counts_its_parameters(tiny_bert_no_dropout):
    from transformers import AutoConfig, AutoModel

    from healcore.core import fusion

    cfg = members(tiny_bert_no_dropout)[0]
    params = sum(p.numel() for p in AutoModel.from_config(AutoConfig.from_pretrained(tiny_bert_no_dropout)).parameters())
    no_activations = fusion.member_bytes(cfg.replace(batch_size=1, max_length=8))
    assert abs(no_activations - fusion.BYTES_PER_PARAM * params) < 0.02 * no_activations
    assert fusion.member_bytes(cfg.replace(batch_size=64)) > fusion.member_bytes(cfg) > no_activations
