"""Beyond re-initialisation: removed layers, the largest weights zeroed, which parameters heal (train_layers),
layer-wise learning-rate decay, and any setting as a grid axis."""
from __future__ import annotations

import pytest
import torch

from healcore.core.config import RunConfig
from healcore.core.errors import ConfigError, CorruptionSpecError


def _body(folder: str):
    from healcore.engine.models import load_encoder

    return load_encoder(folder)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "qwen2", "gemma3_text", "albert"])
def test_removal_leaves_l_minus_k_layers_and_the_kept_ones_are_the_originals(tiny_families, kind):
    from healcore.engine.corruption import CorruptionSpec, apply
    from healcore.engine.models import layer_list

    body = _body(tiny_families[kind])
    before = [{n: p.detach().clone() for n, p in block.named_parameters()} for block in layer_list(body)]
    report = apply(body, CorruptionSpec(layers="2,3", method="remove"))
    after = layer_list(body)
    assert len(after) == 2 and report["kept_layers"] == [1, 4] and report["layers"] == [2, 3]
    for block, original in zip(after, (before[0], before[3])):
        params = dict(block.named_parameters())
        assert params.keys() == original.keys() and all(torch.equal(params[n], original[n]) for n in params)
    config = body.config
    depth = next(getattr(config, k) for k in ("num_hidden_layers", "n_layer") if hasattr(config, k))
    assert depth == 2 and len(getattr(config, "layer_types", None) or [0, 0]) == 2
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    assert body(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.shape[-2] == 6  # it runs


def test_removing_every_layer_is_one_line():
    cfg = RunConfig(corrupt="bottom:6", method="remove")
    from healcore.core.layers import chosen_layers

    with pytest.raises(CorruptionSpecError, match="leaves no model; remove fewer"):
        chosen_layers(cfg.layers, cfg.method, 6)
    with pytest.raises(ConfigError, match="removed layers are gone"):
        RunConfig.from_dict({"corrupt": "bottom:1", "method": "remove", "train_layers": "damaged"})


def test_magnitude_damage_zeroes_exactly_the_largest_fraction(tiny_bert):
    from healcore.engine.corruption import CorruptionSpec, apply
    from healcore.engine.models import layer_list

    body = _body(tiny_bert)
    matrices = {f"{i}.{n}": p.detach().clone() for i in (0, 1) for n, p in layer_list(body)[i].named_parameters()
                if p.dim() >= 2}
    others = {n: p.detach().clone() for n, p in body.named_parameters()}
    values = torch.cat([m.abs().reshape(-1) for m in matrices.values()])
    fraction = 0.01
    k = round(fraction * values.numel())
    threshold = torch.topk(values, k).values.min()
    apply(body, CorruptionSpec(layers="bottom:2", method="magnitude", strength=fraction))
    zeroed = 0
    for key, before in matrices.items():
        i, name = key.split(".", 1)
        now = dict(layer_list(body)[int(i)].named_parameters())[name]
        large = before.abs() >= threshold
        assert torch.all(now[large] == 0) and torch.equal(now[~large], before[~large]), key
        zeroed += int(large.sum())
    assert zeroed == k  # random weights: no ties at the threshold
    for name, p in body.named_parameters():  # biases, norms, embeddings and the other layers untouched
        if not (p.dim() >= 2 and name.startswith(("encoder.layer.0.", "encoder.layer.1."))):
            assert torch.equal(p, others[name]), name


@pytest.mark.parametrize("train_layers", ["damaged", "intact", "head"])
def test_every_frozen_parameter_is_bitwise_unchanged_after_training(tiny_bert, train_layers):
    from healcore.engine.corruption import CorruptionSpec, apply
    from healcore.engine.internals import block_of
    from healcore.engine.models import build_classifier
    from healcore.engine.run import freeze_all_but
    from healcore.engine.train import make_optimizer

    body = _body(tiny_bert)
    report = apply(body, CorruptionSpec(layers="bottom:2", method="reinit"))
    model = build_classifier(body, 2, "cls", 0)
    freeze_all_but(model, train_layers, report["layers"], report["num_layers"], "reinit")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, 1e-2, 0.01, "cpu", 0.9)
    torch.manual_seed(0)
    for _ in range(3):
        ids = torch.randint(1000, 2000, (4, 12))
        logits, _ = model(ids, torch.ones_like(ids))
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1])).backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = {"damaged": {"layer 1", "layer 2", "head"}, "head": {"head"},
                "intact": {"embeddings", "layer 3", "layer 4", "pooler", "head"}}[train_layers]
    for name, p in model.named_parameters():
        if block_of(name) in expected:
            assert p.requires_grad
        else:
            assert not p.requires_grad and torch.equal(p, before[name]), name
    moved = {block_of(n) for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == expected


def test_layer_wise_lr_decay_scales_each_block(tiny_bert):
    from healcore.engine.internals import block_of
    from healcore.engine.models import build_classifier
    from healcore.engine.train import layer_lr_scales, make_optimizer

    model = build_classifier(_body(tiny_bert), 2, "cls", 0)
    scales = layer_lr_scales(model, 0.5)
    by_block = {block_of(n): s for n, s in scales.items()}
    assert by_block == {"embeddings": 0.5 ** 4, "layer 1": 0.5 ** 3, "layer 2": 0.25, "layer 3": 0.5, "layer 4": 1.0,
                        "pooler": 1.0, "head": 1.0}
    optimizer = make_optimizer(model, 1e-3, 0.0, "cpu", 0.5)
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert all(rates[id(p)] == pytest.approx(1e-3 * scales[n]) for n, p in model.named_parameters())


def test_runs_that_train_differently_never_fuse():
    from healcore.core.fusion import fusion_groups

    a = RunConfig(corrupt="bottom:1")
    others = [a.replace(corrupt="top:1", train_layers="intact"), a.replace(corrupt="top:2", method="remove"),
              a.replace(corrupt="top:3", lr_layer_decay=0.9)]
    groups = fusion_groups([a, a.replace(corrupt="top:1"), *others], fuse=8)
    assert [len(g) for g in groups] == [2, 1, 1, 1]


def test_a_grid_with_axes_expands_to_the_expected_run_ids():
    from healcore.grids.spec import expand

    spec = {"name": "axes", "models": ["minilm-l6"], "datasets": ["sst2"], "lrs": [5e-5], "seeds": [0],
            "corruption": {"sides": ["bottom"], "levels": ["0%", "50%"]},
            "axes": {"max_train": [250, 1000], "train_layers": ["all", "damaged"]}, "base": {"epochs": 2}}
    expected = {RunConfig.from_dict({"model": "minilm-l6", "dataset": "sst2", "lr": 5e-5, "seed": 0, "epochs": 2,
                                     "pooling": "cls", "corrupt": corrupt, "max_train": n, "train_layers": t}).run_id
                for corrupt in ("none", "bottom:3") for n in (250, 1000) for t in ("all", "damaged")}
    assert {c.run_id for c in expand(spec).configs} == expected and len(expected) == 8
    for axes, match in (({"lr": [1e-5]}, "list its values under 'lrs'"), ({"nope": [1]}, "unknown setting"),
                        ({"train_layers": ["some"]}, "train_layers='some' is not valid")):
        with pytest.raises(ConfigError, match=match):
            expand({**spec, "axes": axes})


def test_the_new_settings_keep_earlier_run_ids():
    plain = RunConfig(corrupt="bottom:1")
    assert "train_layers" not in plain.identity() and "lr_layer_decay" not in plain.identity()
    assert plain.replace(train_layers="intact").run_id != plain.run_id


def test_launch_builds_removal_and_what_heals_into_its_grid(tmp_path, monkeypatch):
    from pages_helpers import open_page

    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    next(s for s in at.selectbox if s.label == "Corruption method").set_value("remove").run()
    assert any("removing all 6 layers leaves no model (valid: 0%, 50%, or 0..5)" in e.value for e in at.error)
    next(m for m in at.multiselect if m.label.startswith("Corruption levels")).set_value(["0%", "50%"]).run()
    next(m for m in at.multiselect if m.label == "Which parameters heal").set_value(["all", "intact"]).run()
    next(n for n in at.number_input if n.label.startswith("Layer-wise lr decay")).set_value(0.9).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = next(m for m in at.metric if m.label == "Runs")
    assert int(runs.value) == 2 * 3  # clean, bottom 50%, top 50%; for each of the two train_layers values


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_angular_distance_and_block_influence_equal_a_direct_computation(tiny_families, kind):
    import math

    import numpy as np

    from healcore.engine.batching import Encoded
    from healcore.engine.internals import layer_transitions

    body = _body(tiny_families[kind]).eval()
    rows = [[101, 2023, 2003, 1037, 3231, 102], [101, 2204, 102], [101, 1045, 2066, 2009, 2200, 2172, 2172, 102]]
    lengths = np.array([len(r) for r in rows])
    enc = Encoded(np.concatenate(rows).astype(np.int32), None, np.concatenate([[0], np.cumsum(lengths)]),
                  np.zeros(len(rows), dtype=np.int64))
    measured = layer_transitions(body, enc, "cpu", 0, 10_000)
    angles, influence = [[] for _ in range(4)], [[] for _ in range(4)]
    with torch.no_grad():
        for r in rows:  # one text at a time, no padding: every token is real
            states = body(input_ids=torch.tensor([r]), output_hidden_states=True, use_cache=False).hidden_states
            for layer in range(1, 5):
                for a, b in zip(states[layer - 1][0], states[layer][0]):
                    c = float(torch.dot(a, b) / (a.norm() * b.norm()))
                    angles[layer - 1].append(math.acos(max(-1.0, min(1.0, c))) / math.pi)
                    influence[layer - 1].append(1 - c)
    assert measured["angular"] == pytest.approx([np.mean(a) for a in angles], abs=1e-5)
    assert measured["block_influence"] == pytest.approx([np.mean(b) for b in influence], abs=1e-5)


def test_a_run_stores_its_layers_turns_before_fine_tuning_pretrained_and_damaged(tiny_bert, tmp_path):
    from conftest import tiny_config

    from healcore.engine.run import execute
    from healcore.store.runs import RunStore

    store = RunStore(tmp_path / "runs")
    for cfg in (tiny_config(tiny_bert, corrupt="bottom:2", epochs=1, analysis_samples=30),
                tiny_config(tiny_bert, corrupt="top:1", method="remove", epochs=1, analysis_samples=30)):
        transitions = execute(cfg, store, show_progress=False)["corruption"]["transitions"]
        damaged_depth = 4 - (1 if cfg.method == "remove" else 0)
        assert len(transitions["pretrained"]["angular"]) == 4
        assert len(transitions["damaged"]["block_influence"]) == damaged_depth
        if cfg.method == "reinit":  # the re-initialised bottom layers turn their input differently; the rest alike
            p, d = transitions["pretrained"]["block_influence"], transitions["damaged"]["block_influence"]
            assert p[0] != pytest.approx(d[0], abs=1e-4)


def test_the_predictor_view_gives_scipys_spearman_on_the_same_cells(tmp_path):
    import numpy as np
    from scipy.stats import spearmanr

    from healcore.results import cells, damage, load_runs
    from healcore.results import synthetic as syn

    store = syn.build(tmp_path / "runs", levels=(0, 1, 2, 3, 6), seeds=(0, 1), lrs=(5e-5,))
    table = cells(load_runs(store.root))
    points = damage.damage_points(table)
    clean = table[table["side"] == "clean"].iloc[0]
    corrupted = table[table["side"] != "clean"]
    assert len(points) == len(corrupted) == 7  # bottom/top 1, 2, 3 and all
    # the points as the cells give them, computed here from the table's own columns
    expected_drop = sorted(float(clean["f1"]) - corrupted["f1"].astype(float))
    assert sorted(points["f1_drop"]) == pytest.approx(expected_drop)
    row = damage.predictors(table).set_index(["measure", "outcome"]).loc[("damage-probe F1 drop",
                                                                          "F1 drop after fine-tuning")]
    assert row["rho"] == pytest.approx(spearmanr(points["probe_drop"], points["f1_drop"]).statistic)
    assert row["n"] == 7 and row["lo"] <= row["rho"] <= row["hi"]
    assert np.isnan(damage.spearman(np.arange(3.0), np.arange(3.0))["rho"])  # too few cells: no rho


def test_where_healing_happens_shows_whether_damage_predicts_healing(tmp_path, monkeypatch):
    from pages_helpers import open_page, texts

    from healcore.results import synthetic as syn

    store = syn.build(tmp_path / "runs", levels=(0, 1, 2, 3, 6), seeds=(0, 1), lrs=(5e-5,))
    monkeypatch.setenv("HEALCORE_RUNS", str(store.root))
    at = open_page("Where healing happens")
    assert not at.exception
    assert any(h.value == "Does damage predict healing?" for h in at.subheader)
    assert "Spearman's rho over the cells" in texts(at)
    table = at.dataframe[0].value
    assert set(table["measure"]) == {"damage-probe F1 drop", "angular-distance shift", "Block Influence shift"}
