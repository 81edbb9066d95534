"""Model names: the derived smaller model (a layer subset of a pretrained one) and its offline short name."""
import json
import threading
from pathlib import Path

import pytest
import torch

from healcore.core.errors import ModelError
from healcore.core.model_facts import num_layers
from healcore.engine import models


def _layer_tensors(model, i):
    return {k: v.clone() for k, v in models.layer_list(model)[i].state_dict().items()}


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
def test_layer_subset_keeps_exactly_the_chosen_pretrained_layers(fixture, request, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    base_dir = request.getfixturevalue(fixture)
    base = AutoModel.from_pretrained(base_dir)
    out = models.derive_layer_subset(base_dir, (1, 3), tmp_path / "sub")
    sub = AutoModel.from_pretrained(str(out))
    assert len(models.layer_list(sub)) == 2 and num_layers(str(out)) == 2
    for new, old in ((0, 1), (1, 3)):
        want, got = _layer_tensors(base, old), _layer_tensors(sub, new)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    # everything outside the layer list (embeddings) is the base's too, and the tokenizer came along
    emb = next(k for k in base.state_dict() if "word_embeddings" in k)
    assert torch.equal(base.state_dict()[emb], sub.state_dict()[emb])
    assert AutoTokenizer.from_pretrained(str(out))("hello")["input_ids"] == \
        AutoTokenizer.from_pretrained(base_dir)("hello")["input_ids"]
    assert json.loads((out / "derived_from.json").read_text())["kept_layers"] == [1, 3]


def test_layer_subset_rejects_layers_the_base_lacks(tiny_bert, tmp_path):
    with pytest.raises(ModelError, match="cannot keep layers \\[0, 9\\] of a 4-layer model"):
        models.derive_layer_subset(tiny_bert, (0, 9), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_concurrent_derivations_leave_one_complete_folder(tiny_bert, tmp_path):
    # several runs sharing a GPU resolve the short name at the same moment
    out, errors = tmp_path / "sub", []

    def derive():
        try:
            models.derive_layer_subset(tiny_bert, (0, 2), out)
        except Exception as err:  # pragma: no cover - the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=derive) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]  # no temporary folder left behind


def test_minilm_l3_is_minilm_l6_every_other_layer(tmp_path, monkeypatch):
    from transformers import AutoModel

    monkeypatch.setenv("HEALCORE_MODEL_CACHE", str(tmp_path))
    path = Path(models.resolve_model_path("minilm-l3"))
    assert path.parent == tmp_path and num_layers("minilm-l3") == 3
    assert models.check_architecture("minilm-l3") == 3
    l6 = AutoModel.from_pretrained(models.resolve_model_path("minilm-l6"))
    l3 = AutoModel.from_pretrained(str(path))
    for new, old in enumerate((0, 2, 4)):
        want, got = _layer_tensors(l6, old), _layer_tensors(l3, new)
        assert all(torch.equal(want[k], got[k]) for k in want)
    assert models.resolve_model_path("minilm-l3") == str(path)  # derived once, then reused


def test_transformers_names_resolve_one_thread_at_a_time(monkeypatch):
    """transformers 5's lazy first lookup of a name is not thread-safe (the dashboard's Launch page, whose
    script threads can overlap, once showed "cannot import name 'AutoModel'"); models.hf serialises it. The
    stand-in module below fails the way the real race does whenever two lookups overlap."""
    import time
    import types

    class RacyLazyModule(types.ModuleType):
        inside = 0

        def __getattr__(self, name):
            RacyLazyModule.inside += 1
            try:
                overlapped = RacyLazyModule.inside > 1
                time.sleep(0.01)  # a first import takes a while; other threads arrive meanwhile
                if overlapped:
                    raise ImportError(f"cannot import name {name!r} from 'transformers'")
                return name
            finally:
                RacyLazyModule.inside -= 1

    monkeypatch.setattr(models, "transformers", RacyLazyModule("transformers"))  # the module models.hf reads
    start, errors = threading.Barrier(8), []

    def look_up(name):
        start.wait()
        try:
            found = models.hf(name)
            if found != name:
                errors.append(f"hf({name!r}) gave {found!r}, not the stand-in's answer")
        except Exception as err:  # noqa: BLE001 - any failure in a thread must reach the assertion below
            errors.append(repr(err))

    threads = [threading.Thread(target=look_up, args=(n,)) for n in ["AutoModel", "AutoTokenizer"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
