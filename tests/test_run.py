"""One healing run end to end on tiny random models (seconds each), plus resume and failure paths."""
import json

import numpy as np
import pytest

from healcore.core.errors import CorruptionSpecError, DataError, Interrupted, ModelError, TrainingDiverged
from healcore.engine.run import execute

from conftest import tiny_config


def test_run_writes_a_complete_folder(tiny_bert, store):
    cfg = tiny_config(tiny_bert, corrupt="bottom:2")
    summary = execute(cfg, store)
    d = store.path(cfg.run_id)
    assert json.loads((d / "config.json").read_text()) == cfg.to_dict()
    status = json.loads((d / "status.json").read_text())
    assert status["state"] == "completed" and status["ended"] >= status["started"]
    rows = store.epochs(cfg.run_id)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for split in ("validation", "test"):
            m = r[split]
            assert set(m) >= {"accuracy", "f1_weighted", "f1_macro", "f1_per_class", "confusion"}
            assert np.array(m["confusion"]).sum() == m["n"]
    assert summary["best_epoch"] in (1, 2) and summary["corruption"]["layers"] == [1, 2]
    assert summary["probe"]["n"] == 100 and summary["healing"] is not None
    import torch
    import transformers

    assert summary["versions"] == {"torch": torch.__version__, "transformers": transformers.__version__}
    expected = torch.cuda.get_device_name() if summary["device"] == "cuda" else "CPU: "
    assert summary["hardware"].startswith(expected)  # what reports and cost estimates group runs by
    with np.load(d / "features" / "best.npz", allow_pickle=False) as z:
        assert z["X"].shape == (50, 32) and len(z["labels"]) == 50 and len(z["predictions"]) == 50
    with np.load(d / "features" / "before.npz", allow_pickle=False) as z:
        assert z["X"].shape == (50, 32)
    assert not (d / "checkpoint").exists()  # pruned on completion
    assert "completed" in (d / "log.txt").read_text()


def test_finished_run_is_reused_not_redone(tiny_bert, store):
    cfg = tiny_config(tiny_bert, epochs=1)
    first = execute(cfg, store)
    mtime = (store.path(cfg.run_id) / "metrics.jsonl").stat().st_mtime_ns
    assert execute(cfg, store) == first
    assert (store.path(cfg.run_id) / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_interrupted_run_resumes_to_the_same_result(tiny_bert, store, tmp_path):
    from healcore.store.runs import RunStore

    cfg = tiny_config(tiny_bert, epochs=3, corrupt="top:1")
    reference = execute(cfg, RunStore(tmp_path / "reference"))

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Interrupted("test stop")

    with pytest.raises(Interrupted):
        execute(cfg, store, on_epoch=stop_after_first)
    assert store.status(cfg.run_id)["state"] == "interrupted"
    assert store.epochs(cfg.run_id)[-1]["epoch"] == 1
    resumed = execute(cfg, store)
    assert "resumed from the checkpoint of epoch 1" in (store.path(cfg.run_id) / "log.txt").read_text()
    assert resumed["losses"] == reference["losses"]
    assert resumed["best"] == reference["best"]


def test_without_checkpoints_an_interrupted_run_restarts_to_the_same_result(tiny_bert, store, tmp_path):
    from healcore.store.runs import RunStore

    cfg = tiny_config(tiny_bert, epochs=2, corrupt="top:1", checkpoint_every=0)
    assert cfg.run_id == tiny_config(tiny_bert, epochs=2, corrupt="top:1").run_id  # how it runs, not what it is
    reference = execute(cfg, RunStore(tmp_path / "reference"))

    def stop_after_first(row):
        assert not (store.path(cfg.run_id) / "checkpoint").exists()
        raise Interrupted("test stop")

    with pytest.raises(Interrupted):
        execute(cfg, store, on_epoch=stop_after_first)
    again = execute(cfg, store)
    assert "resumed" not in (store.path(cfg.run_id) / "log.txt").read_text()
    assert again["losses"] == reference["losses"] and again["best"] == reference["best"]
    assert [r["epoch"] for r in store.epochs(cfg.run_id)] == [1, 2]


def test_linear_probe_keeps_the_body_frozen(tiny_bert, store):
    """The body's weights after training equal the ones it started training with; only the head moved."""
    import torch

    from healcore.engine.run import RunObserver

    seen = {}

    def keep_start(setup):
        seen["before"] = {k: v.clone() for k, v in setup.model.encoder.state_dict().items()}
        seen["head"] = setup.model.head.weight.detach().clone()

    def keep_end(setup):
        seen["after"] = setup.model.encoder.state_dict()
        seen["head after"] = setup.model.head.weight.detach()

    summary = execute(tiny_config(tiny_bert, mode="linear_probe", epochs=2, lr=1e-2), store,
                      observer=RunObserver(set_up=keep_start, trained=keep_end))
    assert summary["params"]["trainable"] == 32 * 2 + 2
    assert seen["before"].keys() == seen["after"].keys()
    assert all(torch.equal(seen["before"][k], seen["after"][k].cpu()) for k in seen["before"])
    assert not torch.equal(seen["head"], seen["head after"].cpu())  # the head did train


def test_mean_pooling_reads_the_token_average_not_the_pooler(tiny_bert, store):
    """With [CLS] pooling a BERT head reads the pooler's tanh output (within -1..1); mean pooling reads the
    average of the last hidden states, which leaves that range: the setting reached the model."""
    cls = execute(tiny_config(tiny_bert, epochs=1), store)
    mean = execute(tiny_config(tiny_bert, epochs=1, pooling="mean"), store)
    with np.load(store.files(cls["run_id"]).features("best"), allow_pickle=False) as z:
        cls_x = z["X"].astype(np.float32)
    with np.load(store.files(mean["run_id"]).features("best"), allow_pickle=False) as z:
        mean_x = z["X"].astype(np.float32)
    assert np.abs(cls_x).max() <= 1.0 and np.abs(mean_x).max() > 1.0
    assert mean["config"]["pooling"] == "mean"


def test_noise_corruption_changes_the_chosen_layers_by_the_asked_strength(tiny_bert, store):
    summary = execute(tiny_config(tiny_bert, epochs=1, method="noise", strength=0.5, corrupt="top:50%"), store)
    report = summary["corruption"]
    assert report["method"] == "noise" and report["strength"] == 0.5 and report["layers"] == [3, 4]
    assert report["params_changed"] > 0 and report["tensors_changed"] > 0
    assert summary["best"]["test"]["f1_weighted"] >= 0


def test_lora_trains_adapters_and_the_head_only(tiny_bert, store):
    summary = execute(tiny_config(tiny_bert, epochs=1, mode="lora", lr=5e-3), store)
    assert summary["params"]["trainable"] < summary["params"]["total"] / 2


def test_sentence_pairs_on_distilbert(tiny_distilbert, store):
    summary = execute(tiny_config(tiny_distilbert, dataset="mrpc", epochs=1, corrupt="bottom:2"), store)
    assert summary["classes"] == ["not_equivalent", "equivalent"]
    assert summary["corruption"]["layers"] == [1, 2]


def test_nan_loss_fails_the_run_with_the_reason(tiny_bert, store, monkeypatch):
    import healcore.engine.train as train

    real = train.cross_entropy
    monkeypatch.setattr(train, "cross_entropy", lambda logits, labels: real(logits, labels) * float("nan"))
    cfg = tiny_config(tiny_bert, epochs=1)
    with pytest.raises(TrainingDiverged):
        execute(cfg, store)
    st = store.status(cfg.run_id)
    assert st["state"] == "failed" and "lower the learning rate" in st["error"] and "Traceback" in st["traceback"]


def test_model_broken_into_nan_fails_before_training(tiny_bert, store):
    cfg = tiny_config(tiny_bert, method="bitflip", strength=0.05, corrupt="bottom:4", epochs=1)
    with pytest.raises(TrainingDiverged, match="before any fine-tuning"):
        execute(cfg, store)
    assert store.status(cfg.run_id)["state"] == "failed"


@pytest.mark.parametrize("overrides,error,match", [
    ({"corrupt": "bottom:5"}, CorruptionSpecError, "has 4"),
    ({"corrupt": "bottom:25%"}, CorruptionSpecError, "valid: bottom:25%, bottom:50%"),
    ({"dataset": "nonexistent"}, DataError, "unknown dataset"),
    ({"method": "shuffle", "corrupt": "bottom:1"}, CorruptionSpecError, "at least 2"),
])
def test_bad_input_leaves_no_run_folder(tiny_bert, store, overrides, error, match):
    if "25%" in overrides.get("corrupt", ""):
        overrides = {"corrupt": "bottom:30%"}
        match = "valid: bottom:25%, bottom:50%"
    with pytest.raises(error, match=match):
        execute(tiny_config(tiny_bert, **overrides), store)
    assert store.run_ids() == []


def test_bad_model_names(store, tmp_path):
    from healcore.core.config import RunConfig

    with pytest.raises(ModelError, match="does not exist"):
        execute(RunConfig(model="./no-such-folder"), store)
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "config.json").write_text(json.dumps(
        {"model_type": "custom-thing", "auto_map": {"AutoModel": "modeling.Custom"}}))
    with pytest.raises(ModelError, match="trust_remote_code|not an architecture"):
        execute(RunConfig(model=str(tmp_path / "remote")), store)
    assert store.run_ids() == []
