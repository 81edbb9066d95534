"""`heads`: damage only chosen attention heads of the chosen layers. Checked by what each model computes, not by
healcore's own head table: the per-head context that enters a block's output projection changes for the chosen
heads and for no other, in every family (grouped-query ones too), and nothing outside attention moves."""
from __future__ import annotations

import pytest
import torch

from healcore.core.config import RunConfig
from healcore.core.errors import ConfigError, HealcoreError
from healcore.core.families import family_of


def _context_into_output(body, layer: int):
    """A hook's capture of the tensor entering layer `layer`'s attention output projection: the heads' contexts
    side by side (n_heads slices of head_dim), whatever the family calls the module."""
    family = family_of(body.config.model_type)
    from healcore.engine.models import layer_list

    out_path = next(path for path, layout in family.heads if layout == "o")
    block = layer_list(body)[layer]
    module = next(m for name, m in block.named_modules() if name == out_path or name.endswith("." + out_path))
    seen = {}
    module.register_forward_hook(lambda mod, args, out: seen.__setitem__("x", args[0].detach().clone()))
    return seen


def _per_head(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def _inputs(body):
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 9))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("method", ["reinit", "noise"])
def test_only_the_chosen_heads_compute_anything_new_in_every_family(tiny_families, method):
    from healcore.engine.corruption import CorruptionSpec, apply
    from healcore.engine.models import layer_list, load_encoder

    for kind, folder in tiny_families.items():
        body = load_encoder(folder).eval()
        n_heads = body.config.num_attention_heads
        n_kv = getattr(body.config, "num_key_value_heads", None) or n_heads
        chosen = [1] if n_kv == n_heads else [0, 1, 3]  # GQA (4 heads, 2 kv): group 0 whole, head 3 alone
        seen = _context_into_output(body, 1)
        with torch.no_grad():
            body(**_inputs(body))
        before_ctx = _per_head(seen["x"], n_heads)
        before = {n: p.detach().clone() for n, p in body.named_parameters()}
        report = apply(body, CorruptionSpec(layers="2", method=method, heads=",".join(map(str, chosen)), seed=3))
        with torch.no_grad():
            body(**_inputs(body))
        after_ctx = _per_head(seen["x"], n_heads)
        for h in range(n_heads):
            moved = (after_ctx[..., h, :] - before_ctx[..., h, :]).abs().max().item()
            if h in chosen:
                assert moved > 1e-6, (kind, method, h)
            else:
                assert moved < 1e-7, (kind, method, h, moved)
        # nothing outside layer 2's attention projections moved: no norm, no feed-forward, no other layer
        family = family_of(kind)
        prefix = f"{family.layers}.1."
        changed = {n for n, p in body.named_parameters() if not torch.equal(before[n], p.detach())}
        assert changed and all(n.startswith(prefix) for n in changed), (kind, changed)
        assert all("norm" not in n.lower() for n in changed), kind
        assert report["heads"] == chosen
        moved_values = sum(int((before[n] != p.detach()).sum()) for n, p in body.named_parameters())
        assert moved_values <= report["params_changed"], kind
        assert layer_list(body) is not None


def test_bert_heads_touch_exactly_their_rows_and_columns_and_magnitude_the_top_of_them(tiny_families):
    """BERT's head h is rows h*d..(h+1)*d of query, key and value, and those columns of attention.output.dense,
    written out here by hand; magnitude damage zeroes the largest of exactly those weights."""
    from healcore.engine.corruption import CorruptionSpec, apply
    from healcore.engine.models import load_encoder

    body = load_encoder(tiny_families["bert"])
    d = body.config.hidden_size // body.config.num_attention_heads
    block = "encoder.layer.0.attention."
    rows = [f"{block}self.{m}.weight" for m in ("query", "key", "value")]
    expected = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in body.named_parameters()}
    for name in rows:
        expected[name][d:2 * d, :] = True
        expected[name.replace("weight", "bias")][d:2 * d] = True
    expected[f"{block}output.dense.weight"][:, d:2 * d] = True
    with torch.no_grad():  # biases start at 0, which re-initialisation also writes: move everything first
        for p in body.parameters():
            p.add_(0.25)
    before = {n: p.detach().clone() for n, p in body.named_parameters()}
    apply(body, CorruptionSpec(layers="1", method="reinit", heads="1"))
    for name, p in body.named_parameters():
        assert torch.equal(before[name] != p.detach(), expected[name]), name

    body = load_encoder(tiny_families["bert"])
    weights = [name for name in expected if name.endswith("weight") and expected[name].any()]
    params = dict(body.named_parameters())
    pool = torch.cat([params[n].detach()[expected[n]].abs() for n in weights])
    k = round(0.05 * pool.numel())
    threshold = torch.topk(pool, k).values.min()
    before = {n: p.detach().clone() for n, p in params.items()}
    apply(body, CorruptionSpec(layers="1", method="magnitude", strength=0.05, heads="1"))
    for name, p in body.named_parameters():
        zeroed = (before[name] != p.detach())
        want = expected[name] & (before[name].abs() >= threshold) if name in weights else torch.zeros_like(zeroed)
        assert torch.equal(zeroed, want), name
        assert (p.detach()[zeroed] == 0).all()


def test_a_head_the_model_lacks_is_one_line_before_any_run_folder(tiny_families, tmp_path):
    from healcore.engine.run import execute
    from healcore.store.runs import RunStore

    store = RunStore(tmp_path / "runs")
    cfg = RunConfig.from_dict({"model": tiny_families["bert"], "dataset": "sst2", "corrupt": "top:1", "heads": "0,2",
                               "max_train": 40, "max_test": 20, "epochs": 1})
    with pytest.raises(HealcoreError, match=r"heads=0,2 .*2 attention heads per layer \(0\.\.1\)"):
        execute(cfg, store)
    assert not list((tmp_path / "runs").glob("*/config.json"))


def test_heads_spelling_run_ids_and_refusals():
    base = {"corrupt": "top:2"}
    spelled = {RunConfig.from_dict({**base, "heads": h}).run_id for h in ("3,0", "0, 3", "0,3")}
    assert len(spelled) == 1 and "-heads0.3_" in next(iter(spelled))
    assert RunConfig.from_dict({**base, "heads": "all"}).run_id == RunConfig.from_dict(base).run_id
    assert RunConfig.from_dict({"heads": "1"}).run_id == RunConfig().run_id  # clean: the knob cannot matter
    for values, words in (({"heads": "first"}, "0-based head indices"), ({"heads": "1,1"}, "names a head twice"),
                          ({**base, "heads": "1", "method": "shuffle"}, "only reinit, noise, zero, magnitude"),
                          ({**base, "heads": "1", "scope": "ffn"}, "use scope=all or scope=attention")):
        with pytest.raises(ConfigError, match=words):
            RunConfig.from_dict(values)


def test_a_grid_block_damages_heads_and_its_ids_name_them():
    from healcore.grids.spec import expand

    grid = expand({"name": "h", "models": ["minilm-l6"], "datasets": ["sst2"],
                   "corruption": [{"sides": ["top"], "levels": ["0%", "50%"]},
                                  {"sides": ["top"], "levels": ["50%"], "heads": "0,5"}]})
    assert sorted(c.heads for c in grid.configs if not c.is_clean) == ["0,5", "all"]
    assert [c.heads for c in grid.configs if c.is_clean] == ["all"]
    assert len({c.run_id for c in grid.configs}) == 3
    with pytest.raises(ConfigError, match="'heads' has its own grid key"):
        expand({"name": "h", "axes": {"heads": ["0", "1"]}})


def test_heads_run_through_the_cli_with_a_report_that_names_them(tiny_families, tmp_path, capsys):
    import json

    from healcore.cli import main

    runs = tmp_path / "runs"
    flags = {"model": tiny_families["bert"], "corrupt": "top:1", "heads": "1", "max_train": 40, "max_test": 20,
             "epochs": 1, "feature_samples": 10, "probe_samples": 20, "analysis_samples": 10}
    code = main(["--store", str(runs), "run", "--quiet", *[f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]])
    assert code == 0, capsys.readouterr()
    summary = json.loads(next(runs.glob("*heads1*/summary.json")).read_text())
    assert summary["corruption"]["heads"] == [1]
    assert summary["config"]["heads"] == "1" and summary["corruption"]["params_changed"] > 0


def test_launch_builds_a_heads_grid_and_refuses_a_head_minilm_lacks(tmp_path, monkeypatch):
    from pages_helpers import open_page

    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    heads = next(t for t in at.text_input if t.label == "Attention heads damaged")
    heads.set_value("12").run()
    assert any("minilm-l6 has 12 attention heads per layer (0..11)" in e.value or
               "it has 12 attention heads per layer (0..11)" in e.value for e in at.error), [e.value for e in at.error]
    next(t for t in at.text_input if t.label == "Attention heads damaged").set_value("3, 0").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    runs = next(m for m in at.metric if m.label == "Runs")
    assert int(runs.value) == 4  # clean, bottom 50%, top 50% and all 6 layers, each damaged in heads 0 and 3
