import pytest

from healcore.core.config import RunConfig, valid_run_id
from healcore.core.errors import ConfigError


def test_defaults_are_valid_and_minilm_is_default():
    cfg = RunConfig()
    cfg.validate()
    assert cfg.model == "minilm-l6"


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ConfigError, match="'learning_rate'"):
        RunConfig.from_dict({"learning_rate": 1e-5})


@pytest.mark.parametrize("key,value", [("lr", -1), ("lr", "abc"), ("epochs", 0), ("epochs", 2.5),
                                       ("batch_size", 10**9), ("mode", "half"), ("pooling", "max"),
                                       ("val_fraction", 0.9), ("lr", float("nan")), ("corrupt", "middle:3")])
def test_bad_values_give_one_line_errors(key, value):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({key: value})
    assert "\n" not in str(info.value) and key in str(info.value)


def test_strings_are_coerced_like_cli_values():
    cfg = RunConfig.from_dict({"lr": "5e-5", "epochs": "4", "corrupt_embeddings": "true"})
    assert cfg.lr == 5e-5 and cfg.epochs == 4 and cfg.corrupt_embeddings is True


def test_run_id_is_stable_and_ignores_device():
    a = RunConfig.from_dict({"corrupt": "bottom:3", "device": "cpu"})
    b = RunConfig.from_dict({"corrupt": " Bottom:3 ", "device": "auto"})
    assert a.run_id == b.run_id and valid_run_id(a.run_id)
    assert a.run_id != RunConfig.from_dict({"corrupt": "bottom:3", "seed": 1}).run_id


def test_clean_runs_ignore_corruption_knobs():
    assert RunConfig(method="noise").run_id == RunConfig().run_id
    assert RunConfig(corrupt="bottom:0").run_id == RunConfig().run_id
    assert "clean" in RunConfig().run_id


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 300, "a..b"])
def test_run_id_validation(bad):
    assert not valid_run_id(bad)
