import math

import pytest
import torch

from healcore.core.errors import CorruptionSpecError, ModelError
from healcore.core.layers import parse_layers
from healcore.engine.corruption import CorruptionSpec, apply, part_of
from healcore.engine.models import layer_list


def bert(layers=12):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=128, vocab_size=100))


def distilbert(layers=6):
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    return DistilBertModel(DistilBertConfig(dim=64, n_layers=layers, n_heads=2, hidden_dim=128, vocab_size=100))


@pytest.mark.parametrize("spec,L,expected", [
    ("bottom:3", 12, [0, 1, 2]), ("top:3", 12, [9, 10, 11]), ("bottom:25%", 12, [0, 1, 2]),
    ("top:50%", 12, list(range(6, 12))), ("bottom:100%", 12, list(range(12))), ("none", 12, []),
    ("1,2,6", 12, [0, 1, 5]), ("top:75%", 24, list(range(6, 24))), ("bottom:50%", 6, [0, 1, 2]),
    ("bottom:0", 12, []), ("top:12", 12, list(range(12))),
])
def test_layer_selection_maps_like_the_paper(spec, L, expected):
    assert parse_layers(spec).resolve(L) == expected


@pytest.mark.parametrize("spec,L,match", [
    ("bottom:25%", 6, "valid: bottom:50%, bottom:100%"), ("bottom:13", 12, "has 12"), ("top:-1", 12, ">= 0"),
    ("bottom:150%", 12, "0..100"), ("middle:2", 12, "not a layer selection"), ("0,1", 12, "numbered from 1"),
    ("7", 6, "out of range"),
])
def test_bad_layer_selections_name_the_fix(spec, L, match):
    with pytest.raises(CorruptionSpecError, match=match):
        parse_layers(spec).resolve(L)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_reinit_follows_the_paper_and_leaves_the_rest_bit_identical():
    model = bert()
    before = _snapshot(model)
    report = apply(model, CorruptionSpec(layers="bottom:3", seed=1))
    assert report["layers"] == [1, 2, 3]
    after = model.state_dict()
    for name, value in after.items():
        inside = any(name.startswith(f"encoder.layer.{i}.") for i in range(3))
        if not inside:
            assert torch.equal(value, before[name]), name
            continue
        if "LayerNorm.weight" in name:
            assert torch.all(value == 1.0), name
        elif name.endswith("bias"):
            assert torch.all(value == 0.0), name
        else:
            fan_in = value.shape[1]
            bound = math.sqrt(6.0 / fan_in)
            assert value.abs().max() <= bound + 1e-6, name
            assert value.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
            assert not torch.equal(value, before[name])


def test_init_variants_have_their_own_scale():
    m1, m2 = bert(2), bert(2)
    apply(m1, CorruptionSpec(layers="bottom:1", init="torch_default"))
    apply(m2, CorruptionSpec(layers="bottom:1", init="normal"))
    w1 = m1.encoder.layer[0].intermediate.dense.weight
    w2 = m2.encoder.layer[0].intermediate.dense.weight
    assert w1.abs().max() <= 1 / math.sqrt(64) + 1e-6
    assert w2.std().item() == pytest.approx(0.02, rel=0.1)


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = bert(4), bert(4), bert(4)
    apply(a, CorruptionSpec(layers="top:2", seed=7))
    apply(b, CorruptionSpec(layers="top:2", seed=7))
    apply(c, CorruptionSpec(layers="top:2", seed=8))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_distilbert_names_are_handled():
    model = distilbert()
    before = _snapshot(model)
    apply(model, CorruptionSpec(layers="top:50%"))
    sd = model.state_dict()
    assert torch.all(sd["transformer.layer.5.sa_layer_norm.weight"] == 1)
    assert torch.all(sd["transformer.layer.5.output_layer_norm.bias"] == 0)
    assert torch.all(sd["transformer.layer.3.ffn.lin1.bias"] == 0)
    assert torch.equal(sd["transformer.layer.2.ffn.lin1.weight"], before["transformer.layer.2.ffn.lin1.weight"])


def test_scope_limits_the_damage_to_one_part():
    model = bert(2)
    before = _snapshot(model)
    apply(model, CorruptionSpec(layers="bottom:1", scope="attention"))
    sd = model.state_dict()
    assert not torch.equal(sd["encoder.layer.0.attention.self.query.weight"], before["encoder.layer.0.attention.self.query.weight"])
    assert torch.all(sd["encoder.layer.0.attention.output.LayerNorm.weight"] == before["encoder.layer.0.attention.output.LayerNorm.weight"])
    assert torch.equal(sd["encoder.layer.0.intermediate.dense.weight"], before["encoder.layer.0.intermediate.dense.weight"])


def test_embeddings_and_pooler_flags():
    model = bert(2)
    before = _snapshot(model)
    apply(model, CorruptionSpec(layers="none", embeddings=True, pooler=True))
    sd = model.state_dict()
    assert not torch.equal(sd["embeddings.word_embeddings.weight"], before["embeddings.word_embeddings.weight"])
    assert torch.all(sd["pooler.dense.bias"] == 0)
    assert torch.equal(sd["encoder.layer.0.output.dense.weight"], before["encoder.layer.0.output.dense.weight"])


def test_noise_zero_bitflip_shuffle():
    m = bert(2)
    w0 = m.encoder.layer[0].output.dense.weight.detach().clone()
    apply(m, CorruptionSpec(layers="bottom:1", method="noise", strength=0.5))
    delta = m.encoder.layer[0].output.dense.weight - w0
    assert delta.std().item() == pytest.approx(0.5 * w0.std().item(), rel=0.1)

    m = bert(2)
    apply(m, CorruptionSpec(layers="bottom:1", method="zero", strength=0.3))
    frac = (m.encoder.layer[0].output.dense.weight == 0).float().mean().item()
    assert frac == pytest.approx(0.3, abs=0.03)

    m = bert(2)
    w0 = m.encoder.layer[0].output.dense.weight.detach().clone()
    report = apply(m, CorruptionSpec(layers="bottom:1", method="bitflip", strength=1e-3))
    assert report["bits_flipped"] > 0
    changed = (m.encoder.layer[0].output.dense.weight != w0).sum().item()
    assert 0 < changed <= report["bits_flipped"]

    m = bert(4)
    ids = [id(layer) for layer in m.encoder.layer]
    report = apply(m, CorruptionSpec(layers="bottom:3", method="shuffle"))
    new = [id(layer) for layer in m.encoder.layer]
    assert sorted(new[:3]) == sorted(ids[:3]) and new[:3] != ids[:3] and new[3] == ids[3]
    with pytest.raises(CorruptionSpecError):
        apply(bert(4), CorruptionSpec(layers="bottom:1", method="shuffle"))


def test_bitflip_on_bfloat16():
    m = bert(1).to(torch.bfloat16)
    report = apply(m, CorruptionSpec(layers="bottom:1", method="bitflip", strength=1e-2))
    assert report["bits_flipped"] > 0


@pytest.mark.parametrize("factory", ["roberta", "electra", "deberta-v2", "distilbert", "bert"])
def test_layer_list_is_found_generically(factory):
    import transformers as tf

    configs = {
        "roberta": tf.RobertaConfig, "electra": tf.ElectraConfig, "deberta-v2": tf.DebertaV2Config,
        "bert": tf.BertConfig,
    }
    if factory == "distilbert":
        model = distilbert(3)
    else:
        cfg = configs[factory](hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                               vocab_size=100)
        if factory == "electra":
            cfg.embedding_size = 32
        model = tf.AutoModel.from_config(cfg)
    assert len(layer_list(model)) == 3
    before = _snapshot(model)
    apply(model, CorruptionSpec(layers="top:1"))
    changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
    assert changed and all(".2." in k for k in changed)


def test_an_unknown_family_names_the_known_ones():
    from transformers import T5Config, T5EncoderModel

    model = T5EncoderModel(T5Config(num_layers=2, d_model=32, num_heads=2, d_ff=64, d_kv=16, vocab_size=100))
    with pytest.raises(ModelError, match="'t5'.*BERT.*GPT-2"):
        layer_list(model)


def test_part_classification():
    import torch.nn as nn

    from healcore.core.families import family_of

    bert, distilbert = family_of("bert"), family_of("distilbert")
    assert part_of(bert, "attention.output.LayerNorm", nn.LayerNorm(4)) == "layernorm"
    assert part_of(bert, "attention.self.query", nn.Linear(2, 2)) == "attention"
    assert part_of(bert, "intermediate.dense", nn.Linear(2, 2)) == "ffn"
    assert part_of(distilbert, "sa_layer_norm", nn.LayerNorm(4)) == "layernorm"
