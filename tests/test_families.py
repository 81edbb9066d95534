"""Every model family of core/families.py, on tiny random-weight models (conftest.TINY_FAMILIES): the table places
every parameter, each kind of damage changes exactly the chosen layers, decoders pool their last real token, and a
run stores every artefact through the CLI, a grid, LoRA and the linear probe."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from healcore.core.errors import ConfigError, HealcoreError, ModelError
from healcore.core.families import FAMILIES, family_of
from conftest import TINY_FAMILIES

DECODERS = [kind for kind in TINY_FAMILIES if family_of(kind).causal]


def _body(folder: str):
    from healcore.engine.models import load_encoder

    return load_encoder(folder)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _layer_prefix(model, index: int) -> str:
    """The parameter-name prefix of block `index` (0-based) in a loaded body."""
    family = family_of(model.config.model_type)
    return f"{family.layers}.{index}."


def test_every_family_has_a_tiny_model_and_the_table_places_every_parameter(tiny_families):
    from healcore.engine.models import layer_list

    assert {f.name for f in FAMILIES} == {family_of(kind).name for kind in TINY_FAMILIES}
    for kind, folder in tiny_families.items():
        body = _body(folder)
        family = family_of(kind)
        blocks = layer_list(body)
        assert len(blocks) == 4, kind
        for mod_name, module in blocks[0].named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                from healcore.engine.corruption import part_of

                assert part_of(family, mod_name, module) in ("attention", "ffn", "layernorm"), (kind, mod_name)
        names = [n for n, _ in body.named_parameters()]
        assert any(n.startswith(family.embeddings) for n in names), kind  # the table names its embeddings


@pytest.mark.parametrize("method,strength", [("reinit", None), ("noise", 1.0), ("zero", 0.5), ("bitflip", 0.01),
                                             ("shuffle", None)])
def test_each_damage_changes_exactly_the_chosen_layers_in_every_family(tiny_families, method, strength):
    from healcore.engine.corruption import CorruptionSpec, apply

    layers = "bottom:2" if method == "shuffle" else "2"
    for kind, folder in tiny_families.items():
        if method == "shuffle" and family_of(kind).shared_layers:
            from healcore.core.model_facts import check_model_settings

            with pytest.raises(ModelError, match="changes nothing"):
                check_model_settings(folder, "cls", "shuffle")
            continue
        body = _body(folder)
        before = _params(body)
        report = apply(body, CorruptionSpec(layers=layers, method=method, strength=strength, seed=3))
        after = _params(body)
        chosen = [_layer_prefix(body, i) for i in ((0, 1) if method == "shuffle" else (1,))]
        assert report["layers"] == ([1, 2] if method == "shuffle" else [2]), kind
        # a name only before or after counts as changed (ModernBERT's first block has no attention norm to move)
        changed = {n for n in before.keys() | after.keys()
                   if n not in before or n not in after or not torch.equal(before[n], after[n])}
        assert changed, (kind, method)
        assert all(n.startswith(tuple(chosen)) for n in changed), (kind, method, sorted(changed - {
            n for n in changed if n.startswith(tuple(chosen))}))
        if method in ("reinit", "noise"):  # every weight matrix of the chosen layer is redrawn or moved
            matrices = [n for n in before if n.startswith(chosen[0]) and before[n].dim() >= 2]
            assert matrices and set(matrices) <= changed, (kind, method, set(matrices) - changed)


def test_reinit_follows_each_familys_norms_biases_and_weight_layout(tiny_families):
    from healcore.engine.corruption import CorruptionSpec, _is_norm, apply
    from healcore.engine.models import layer_list

    for kind, folder in tiny_families.items():
        body = _body(folder)
        family = family_of(kind)
        with torch.no_grad():  # make the starting values unlike the ones re-initialisation sets
            for p in body.parameters():
                p.add_(0.5)
        apply(body, CorruptionSpec(layers="1", method="reinit", seed=0))
        block = layer_list(body)[0]
        for mod_name, module in block.named_modules():
            for p_name, p in module.named_parameters(recurse=False):
                where = (kind, mod_name, p_name)
                if _is_norm(module):
                    assert torch.all(p == (family.norm_identity if p_name == "weight" else 0.0)), where
                elif p_name.endswith("bias"):
                    assert torch.all(p == 0), where
                elif p.dim() >= 2:
                    # Kaiming uniform's bound sqrt(6 / fan_in), fan_in = the inputs of the map the module applies
                    fan_in = p.shape[0] if type(module).__name__ == "Conv1D" else p.shape[1]
                    bound = math.sqrt(6 / fan_in)
                    assert p.abs().max() <= bound + 1e-6, where
                    assert p.abs().max() > 0.8 * bound, where  # the full range is used: the right fan-in
    gemma = _body(tiny_families["gemma3_text"])
    apply(gemma, CorruptionSpec(layers="1", method="reinit"))
    x = torch.randn(2, 32)
    norm = layer_list(gemma)[0].input_layernorm
    plain = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    assert torch.allclose(norm(x), plain, atol=1e-5)  # Gemma's (1 + weight) norm scales by one after re-init


def test_scopes_touch_only_their_modules_in_every_family(tiny_families):
    from healcore.engine.corruption import CorruptionSpec, apply, part_of
    from healcore.engine.models import layer_list

    for kind, folder in tiny_families.items():
        family = family_of(kind)
        for scope in ("attention", "ffn", "layernorm"):
            body = _body(folder)
            block = layer_list(body)[0]
            before = {f"{m}.{n}": p.detach().clone() for m, mod in block.named_modules()
                      for n, p in mod.named_parameters(recurse=False)}
            owner = {f"{m}.{n}": part_of(family, m, mod) for m, mod in block.named_modules()
                     for n, _ in mod.named_parameters(recurse=False)}
            with torch.no_grad():
                for p in block.parameters():
                    p.add_(0.25)
            shifted = {f"{m}.{n}": p.detach().clone() for m, mod in block.named_modules()
                       for n, p in mod.named_parameters(recurse=False)}
            apply(body, CorruptionSpec(layers="1", method="reinit", scope=scope))
            after = {f"{m}.{n}": p.detach() for m, mod in block.named_modules()
                     for n, p in mod.named_parameters(recurse=False)}
            changed = {n for n in after if not torch.equal(shifted[n], after[n])}
            assert changed and {owner[n] for n in changed} == {scope}, (kind, scope)
            assert len(before) == len(after)


def test_albert_is_untied_per_depth_with_the_same_function(tiny_families):
    from transformers import AutoModel

    from healcore.engine.corruption import CorruptionSpec, apply
    from healcore.engine.models import layer_list

    tied = AutoModel.from_pretrained(tiny_families["albert"]).eval()
    untied = _body(tiny_families["albert"]).eval()
    assert len(layer_list(untied)) == 4 and len(tied.encoder.albert_layer_groups) == 1
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        assert torch.allclose(tied(input_ids=ids).last_hidden_state, untied(input_ids=ids).last_hidden_state,
                              atol=1e-5)
    before = _params(untied)
    apply(untied, CorruptionSpec(layers="2", method="reinit"))
    changed = {n for n, p in untied.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(n.startswith("encoder.albert_layer_groups.1.") for n in changed)


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_pooling_reads_the_last_real_token_on_either_padding_side(side):
    from healcore.engine.models import last_token

    torch.manual_seed(0)
    lengths = [5, 2, 7, 1]
    width = 7
    hidden = torch.randn(len(lengths), width, 3)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    expected = []
    for row, n in enumerate(lengths):
        if side == "right":
            mask[row, :n] = 1
            expected.append(hidden[row, n - 1])
        else:
            mask[row, width - n:] = 1
            expected.append(hidden[row, width - 1])
    assert torch.equal(last_token(hidden, mask), torch.stack(expected))


def test_decoders_default_to_last_pooling_and_refuse_cls(tiny_families):
    from healcore.cli import _config_from_args, build_parser
    from healcore.core.model_facts import check_model_settings, default_pooling, with_model_defaults
    from healcore.engine.models import build_classifier
    from healcore.grids.spec import expand

    for kind, folder in tiny_families.items():
        causal = family_of(kind).causal
        assert default_pooling(folder) == ("last" if causal else "cls"), kind
        if causal:
            with pytest.raises(ModelError, match="pooling=last"):
                check_model_settings(folder, "cls", "reinit")
            with pytest.raises(ModelError, match="decoder"):
                build_classifier(_body(folder), 2, "cls", 0)
    gpt2 = tiny_families["gpt2"]
    args = build_parser().parse_args(["run", "--model", gpt2])
    assert _config_from_args(args).pooling == "last"
    assert with_model_defaults({"model": gpt2, "pooling": "mean"})["pooling"] == "mean"  # a given one stays
    grid = expand({"name": "g", "models": [gpt2, tiny_families["bert"]], "datasets": ["sst2"],
                   "corruption": {"sides": ["bottom"], "levels": ["0%"]}})
    assert {c.model: c.pooling for c in grid.configs} == {gpt2: "last", tiny_families["bert"]: "cls"}


def test_an_unknown_family_is_one_line_naming_the_known_ones(tmp_path):
    from healcore.core.model_facts import check_model_offline

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "num_layers": 2}))
    with pytest.raises(ModelError) as err:
        check_model_offline(str(tmp_path))
    text = str(err.value)
    assert "\n" not in text and "'t5'" in text and "GPT-2" in text and "ALBERT" in text


def test_a_tokenizer_without_pad_pads_with_an_existing_token(tmp_path, tiny_families):
    from transformers import AutoTokenizer

    from healcore.engine.models import load_tokenizer

    folder = tmp_path / "nopad"
    tok = AutoTokenizer.from_pretrained(tiny_families["gpt2"])
    size = len(tok)
    tok.pad_token = None
    tok.save_pretrained(folder)
    shutil.copy(f"{tiny_families['gpt2']}/config.json", folder / "config.json")
    loaded = load_tokenizer(str(folder))
    assert loaded.pad_token is not None and loaded.pad_token_id == loaded.convert_tokens_to_ids(loaded.unk_token)
    assert len(loaded) == size  # no token added: the embedding matrix keeps its size


def test_model_shape_counts_each_familys_block_parameters(tiny_families):
    from healcore.core.model_facts import model_shape
    from healcore.engine.models import layer_list

    for kind, folder in tiny_families.items():
        body = _body(folder)
        matrices = sum(p.numel() for p in layer_list(body).parameters() if p.dim() >= 2)
        assert model_shape(folder)["block_params"] == matrices, kind
        assert model_shape(folder)["layers"] == 4


def _small_run(model: str, **overrides) -> dict:
    base = dict(model=model, dataset="sst2", epochs=1, batch_size=16, max_length=32, max_train=48, max_test=32,
                lr=1e-3, feature_samples=16, probe_samples=32, analysis_samples=16, corrupt="bottom:1")
    return {**base, **overrides}


def test_every_family_runs_from_the_cli_with_every_artefact(tiny_families, tmp_path, capsys):
    from healcore.cli import main

    store = tmp_path / "runs"
    for kind, folder in tiny_families.items():
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in _small_run(folder).items()]
        assert main(["--store", str(store), "run", "--quiet", *flags]) == 0, kind
        run_dir = next(p for p in store.iterdir() if p.name.startswith(kind.replace("_", "-")))
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["config"]["pooling"] == family_of(kind).pooling, kind
        assert summary["corruption"]["layers"] == [1]
        assert {"layer 1", "layer 4", "embeddings", "head"} <= set(summary["weight_movement"]), kind
        assert summary["per_class"] and math.isfinite(summary["probe"]["f1_weighted"]), kind
        assert (run_dir / "features" / "before.npz").is_file() and (run_dir / "features" / "best.npz").is_file()
        assert (run_dir / "analysis.npz").is_file(), kind  # per-layer representations: layer CKA


@pytest.mark.parametrize("mode", ["lora", "linear_probe"])
def test_every_family_heals_with_lora_and_the_linear_probe(tiny_families, tmp_path, mode):
    from healcore.core.config import RunConfig
    from healcore.core.model_facts import with_model_defaults
    from healcore.engine.run import execute
    from healcore.store.runs import RunStore

    store = RunStore(tmp_path / "runs")
    for kind, folder in tiny_families.items():
        cfg = RunConfig.from_dict(with_model_defaults(_small_run(folder, mode=mode, analysis_samples=0)))
        summary = execute(cfg, store, show_progress=False)
        assert math.isfinite(summary["best"]["test"]["f1_weighted"]), (kind, mode)
        if mode == "lora":
            trained = summary["params"]["trainable"]
            assert 0 < trained < summary["params"]["total"] / 2, kind  # adapters and head, not the body


def test_every_family_runs_in_one_grid(tiny_families, tmp_path):
    import yaml

    from healcore.cli import main

    spec = {"name": "families", "models": list(tiny_families.values()), "datasets": ["sst2"],
            "corruption": {"sides": ["top"], "levels": ["25%"]}, "lrs": [1e-3], "seeds": [0],
            "base": {k: v for k, v in _small_run("x").items() if k not in ("model", "dataset", "lr", "corrupt")}}
    path = tmp_path / "families.yaml"
    path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "runs"
    assert main(["--store", str(store), "grid", str(path), "--workers", "2"]) == 0
    done = [json.loads(p.read_text()) for p in store.glob("*/summary.json")]
    assert len(done) == len(tiny_families)
    assert all(s["corruption"]["layers"] == [4] for s in done)


def test_cost_prior_and_memory_plan_read_every_familys_config(tiny_families):
    from healcore.core.config import RunConfig
    from healcore.core.fusion import member_bytes
    from healcore.core.model_facts import non_embedding_params

    for kind, folder in tiny_families.items():
        assert non_embedding_params(folder) > 0, kind
        cfg = RunConfig.from_dict({"model": folder, "pooling": family_of(kind).pooling})
        assert member_bytes(cfg) > 0, kind


def test_cls_on_a_decoder_leaves_no_run_folder(tiny_families, tmp_path):
    from healcore.core.config import RunConfig
    from healcore.engine.run import execute
    from healcore.store.runs import RunStore

    store = RunStore(tmp_path / "runs")
    cfg = RunConfig.from_dict(_small_run(tiny_families["llama"], pooling="cls"))
    with pytest.raises(HealcoreError, match="pooling=last"):
        execute(cfg, store, show_progress=False)
    assert not any((tmp_path / "runs").glob("*/status.json"))
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"pooling": "first"})


def test_models_inspect_agrees_with_the_engine_on_every_family(tiny_families, capsys):
    from healcore.cli import main
    from healcore.core.inspection import inspect_model
    from healcore.engine.corruption import part_of
    from healcore.engine.models import layer_list

    for kind, folder in tiny_families.items():
        info = inspect_model(folder)
        family = family_of(kind)
        assert info["family"] == family.name and info["layers"] == 4 and info["scope_source"] == "weights header"
        assert info["picks"]["bottom:25%"] == "layer 1" and info["picks"]["top:50%"] == "layers 3-4"
        assert info["default_pooling"] == family.pooling and info["lora_targets"] == list(family.lora)
        block = layer_list(_body(folder))[0 if kind != "modernbert" else 1]  # ModernBERT's first has no attn norm
        engine = {m: part_of(family, m, mod) for m, mod in block.named_modules()
                  if any(True for _ in mod.parameters(recurse=False))}
        shown = {m: scope for scope, modules in info["scopes"].items() for m in modules}
        if kind != "modernbert":
            assert shown == engine, kind
        else:
            assert set(shown.items()) <= set(engine.items())
        named = [m for m in block.named_modules()]
        for entry in info["head_layout"]:  # every module the heads line names is one the block has
            path = entry.split(" (")[0]
            assert any(m == path or m.endswith("." + path) for m, _ in named), (kind, path)
    assert main(["models", "inspect", tiny_families["gpt2"]]) == 0
    out = capsys.readouterr().out
    assert "GPT-2" in out and "mlp.c_fc" in out and "last by default" in out
    assert "heads        0..1 (heads=0,3 damages those): attn.c_attn (q, k and v output blocks" in out
    assert main(["models", "inspect", "/nonexistent/model"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="session")
def tiny_gpt2_no_dropout(tmp_path_factory, tiny_families) -> str:
    """A tiny GPT-2 without dropout (head included): runs that must match across training paths."""
    from transformers import AutoConfig

    from conftest import _save_tiny

    cfg = AutoConfig.for_model("gpt2", vocab_size=30522, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                               **TINY_FAMILIES["gpt2"])
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-gpt2-nodrop"), cfg))


def test_a_fused_decoder_group_matches_its_runs_alone(tiny_gpt2_no_dropout, tmp_path):
    from healcore.engine.fused import execute_fused
    from healcore.engine.run import execute
    from healcore.store.runs import RunStore
    from conftest import fusable_members

    configs = [c.replace(pooling="last") for c in fusable_members(tiny_gpt2_no_dropout, precision="fp32")]
    alone, fused = RunStore(tmp_path / "alone"), RunStore(tmp_path / "fused")
    for cfg in configs:
        execute(cfg, alone)
    assert [r["state"] for r in execute_fused(configs, fused)] == ["completed"] * 3
    for cfg in configs:
        for ra, rf in zip(alone.epochs(cfg.run_id), fused.epochs(cfg.run_id)):
            assert rf["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4, rel=1e-4)
            assert rf["test"]["f1_weighted"] == pytest.approx(ra["test"]["f1_weighted"], abs=1e-4)


def test_a_compiled_decoder_run_matches_the_eager_run(tiny_gpt2_no_dropout, tmp_path):
    from healcore.engine.run import execute
    from healcore.store.runs import RunStore
    from conftest import assert_same_epochs, one_shape_runs

    cfg = one_shape_runs(tiny_gpt2_no_dropout)[1].replace(pooling="last")
    eager, compiled = RunStore(tmp_path / "eager"), RunStore(tmp_path / "compiled")
    execute(cfg, eager)
    execute(cfg.replace(compile="default"), compiled)
    assert_same_epochs(eager, compiled, cfg.run_id)


def test_a_layer_subset_is_derived_from_every_family(tiny_families, tmp_path):
    from healcore.core.model_facts import num_layers
    from healcore.engine.models import derive_layer_subset, layer_list

    for kind, folder in tiny_families.items():
        out = derive_layer_subset(folder, (0, 2), tmp_path / kind)
        assert num_layers(str(out)) == 2, kind
        full, kept = _body(folder), _body(str(out))
        assert len(layer_list(kept)) == 2
        for slot, index in enumerate((0, 2)):  # the kept blocks are the originals' weights
            original = dict(layer_list(full)[index].named_parameters())
            for name, p in layer_list(kept)[slot].named_parameters():
                assert torch.equal(p, original[name]), (kind, name)


def test_launch_shows_a_decoders_card_and_starts_it_with_its_own_pooling(tiny_families, tmp_path, monkeypatch):
    from conftest import wait_for
    from pages_helpers import launch_builder

    gpt2 = tiny_families["gpt2"]
    store = tmp_path / "runs"
    at = launch_builder(gpt2, store, monkeypatch)
    card = next(e for e in at.expander if e.label.startswith(f"Model {gpt2}"))
    shown = "\n".join(c.value for c in card.code)
    assert "GPT-2" in shown and "mlp.c_fc" in shown and "last by default" in shown and "bottom:25% = layer 1" in shown
    next(m for m in at.multiselect if m.label.startswith("Corruption levels")).set_value(["25%"]).run()
    next(m for m in at.multiselect if m.label == "Sides").set_value(["top"]).run()
    next(n for n in at.number_input if n.label == "Epochs").set_value(1).run()
    next(n for n in at.number_input if n.label.startswith("Max train")).set_value(48).run()
    next(n for n in at.number_input if n.label.startswith("Max test")).set_value(32).run()
    next(t for t in at.text_input if t.label == "Grid name").set_value("decoder-ui").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    next(b for b in at.button if b.label == "Start").click().run()
    assert any("Started grid decoder-ui" in s.value for s in at.success), [e.value for e in at.error]

    def completed() -> list:
        return [p for p in store.glob("*/status.json") if json.loads(p.read_text()).get("state") == "completed"]

    assert wait_for(lambda: bool(completed()), timeout=240, every=0.5), (store / ".grids" / "decoder-ui.log").read_text()
    summary = json.loads((completed()[0].parent / "summary.json").read_text())
    assert summary["config"]["pooling"] == "last" and summary["corruption"]["layers"] == [4]
