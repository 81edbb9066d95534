"""Data from anywhere (core/sources.py): hub:<id>[:<config>] through the real datasets.load_dataset (a repository
folder laid out as on the hub, and a pre-filled datasets cache, offline), folders saved with
DatasetDict.save_to_disk, the user's own column and split names, and a validation file. No network, and
load_dataset itself is never replaced."""
from __future__ import annotations

import pandas as pd
import pytest

from healcore import cli
from healcore.core.config import RunConfig
from healcore.core.data import load_splits
from healcore.core.errors import DataError
from healcore.store.runs import RunStore

from conftest import prefill_datasets_cache, tiny_config

GOOD = [f"a fine and good film {i}" for i in range(30)]
BAD = [f"a dull and bad film {i}" for i in range(30)]


def dataset_dict(n_test: int = 10):
    """A DatasetDict with a ClassLabel column and names a CSV user would choose: review / stars."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"review": Value("string"), "stars": ClassLabel(names=["bad", "good"]),
                         "idx": Value("int32")})

    def part(good, bad):
        rows = {"review": good + bad, "stars": [1] * len(good) + [0] * len(bad)}
        return Dataset.from_dict({**rows, "idx": list(range(len(rows["review"])))}, features=features)

    return DatasetDict({"train": part(GOOD, BAD), "test": part(GOOD[:n_test // 2], BAD[:n_test // 2])})


def hub_repository(folder):
    """A dataset repository as the hub lays one out: data/<split>-00000-of-00001.parquet."""
    (folder / "data").mkdir(parents=True)
    for split, ds in dataset_dict().items():
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_a_saved_datasetdict_runs_end_to_end_with_its_class_names(tiny_bert, tmp_path, capsys):
    folder = tmp_path / "reviews"
    dataset_dict().save_to_disk(str(folder))
    store = RunStore(tmp_path / "runs")
    argv = ["--store", str(store.root), "run", "--quiet", "--model", tiny_bert, "--dataset", str(folder),
            "--epochs", "1", "--batch-size", "16", "--max-length", "32", "--val-fraction", "0.2"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    run_id = store.run_ids()[0]
    summary = store.summary(run_id)
    assert summary["classes"] == ["bad", "good"]  # from the ClassLabel, not "0"/"1"
    assert summary["data"]["columns"] == {"text": "review", "text_pair": None, "label": "stars"}
    assert summary["data"]["sizes"] == {"train": 48, "validation": 12, "test": 10}
    log = store.files(run_id).log.read_text()
    assert "saved DatasetDict" in log and "columns found by name: text='review', label='stars'" in log


def test_hub_datasets_load_through_load_dataset_from_a_repository_folder(tmp_path, datasets_cache):
    repo = hub_repository(tmp_path / "someuser" / "tiny_reviews")
    splits = load_splits(RunConfig(dataset=f"hub:{repo}", val_fraction=0.25))
    assert splits.classes == ["bad", "good"] and splits.sizes() == {"train": 45, "validation": 15, "test": 10}
    assert splits.columns == {"text": "review", "text_pair": None, "label": "stars"}
    assert splits.source == f"hub {repo}" and any(datasets_cache.rglob("dataset_info.json"))  # it went via the cache


def test_offline_a_hub_dataset_in_the_cache_loads_and_one_that_is_not_is_one_line(tmp_path, datasets_cache):
    """The cache a real download leaves (namespace___name/config/version/hash/), filled here from a repository
    folder; then hub:someuser/tiny_reviews loads offline through load_dataset's own cache lookup."""
    prefill_datasets_cache(datasets_cache, "someuser/tiny_reviews", dataset_dict(), tmp_path)
    splits = load_splits(RunConfig(dataset="hub:someuser/tiny_reviews", val_fraction=0.0, select_on="test"))
    assert splits.classes == ["bad", "good"] and len(splits.train) == 60
    with pytest.raises(DataError) as info:
        load_splits(RunConfig(dataset="hub:someuser/not_downloaded"))
    message = str(info.value)
    assert "is not in this machine's datasets cache" in message and "healcore data export hub:" in message
    assert "\n" not in message


def test_columns_splits_and_a_validation_file_of_a_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = pd.DataFrame({"review": GOOD + BAD, "stars": ["5"] * 30 + ["1"] * 30, "title": ["t"] * 60})
    rows.to_csv(folder / "train.csv", index=False)
    rows.iloc[::6].to_csv(folder / "validation.csv", index=False)
    rows.iloc[1::6].to_json(folder / "dev.jsonl", orient="records", lines=True)
    rows.iloc[::3].to_parquet(folder / "test.parquet")
    splits = load_splits(RunConfig(dataset=str(folder)))
    assert splits.columns == {"text": "review", "text_pair": None, "label": "stars"}
    assert len(splits.validation) == 10 and len(splits.train) == 60  # the file, no carve-out from train
    assert any("validation: the source's 'validation' split" in n for n in splits.notes)
    chosen = load_splits(RunConfig(dataset=str(folder), text_column="title", text_pair_column="review",
                                   label_column="stars", test_split="dev"))
    assert chosen.columns == {"text": "title", "text_pair": "review", "label": "stars"} and len(chosen.test) == 10
    assert not any("columns found by name" in n for n in chosen.notes)  # nothing detected: nothing to report
    for options, expected in [({"label_column": "score"}, "has no column 'score' (its columns: review, stars, title)"),
                              ({"text_pair_column": "other"}, "has no column 'other'"),
                              ({"test_split": "holdout"}, "has no 'holdout' file (its files: dev, test, train, "
                                                          "validation;"),
                              ({"train_split": "test", "test_split": "test"}, "train and test are both")]:
        with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            load_splits(RunConfig(dataset=str(folder), **options))


def test_a_pair_task_is_detected_and_can_be_turned_off(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = pd.DataFrame({"premise": GOOD + BAD, "hypothesis": BAD + GOOD, "label": ["yes"] * 30 + ["no"] * 30})
    for split in ("train", "test"):
        rows.to_csv(folder / f"{split}.csv", index=False)
    splits = load_splits(RunConfig(dataset=str(folder)))
    assert splits.has_pair and splits.columns["text_pair"] == "hypothesis"
    assert any("columns found by name: text='premise', text_pair='hypothesis' " in n for n in splits.notes)
    assert not load_splits(RunConfig(dataset=str(folder), text_pair_column="none")).has_pair


@pytest.mark.parametrize("make,expected", [
    (lambda d: pd.DataFrame({"text": GOOD + BAD, "label": [i / 7 for i in range(60)]}),
     "holds fractional numbers (60 distinct"),
    (lambda d: pd.DataFrame({"body_text": GOOD + BAD, "label": ["a", "b"] * 30}),
     "has no text column by a usual name"),
    (lambda d: pd.DataFrame({"text": GOOD + BAD, "label": [-1] * 60}), "has no labels (all -1"),
])
def test_label_and_column_mistakes_are_one_line(tmp_path, make, expected):
    folder = tmp_path / "bad"
    folder.mkdir()
    frame = make(folder)
    frame.to_parquet(folder / "train.parquet")
    if "label" in frame and (frame["label"] == -1).all():
        pd.DataFrame({"text": GOOD + BAD, "label": [0, 1] * 30}).to_parquet(folder / "train.parquet")
    frame.to_parquet(folder / "test.parquet")
    with pytest.raises(DataError) as info:
        load_splits(RunConfig(dataset=str(folder)))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_ten_thousand_float_labels_are_refused_in_one_line(tmp_path):
    folder = tmp_path / "regression"
    folder.mkdir()
    frame = pd.DataFrame({"text": [f"t {i}" for i in range(10_000)], "label": [i / 10_001 for i in range(10_000)]})
    frame.to_parquet(folder / "train.parquet")
    frame.to_parquet(folder / "test.parquet")
    with pytest.raises(DataError, match=r"holds fractional numbers \(10,000 distinct"):
        load_splits(RunConfig(dataset=str(folder)))


def test_data_export_writes_a_hub_dataset_as_a_folder_that_loads_the_same(tmp_path, datasets_cache, capsys):
    repo = hub_repository(tmp_path / "repo")
    out = tmp_path / "exported"
    assert cli.main(["data", "export", f"hub:{repo}", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    exported = pd.read_csv(out / "train.csv.gz")
    assert list(exported.columns) == ["text", "label"] and set(exported["label"]) == {"bad", "good"}
    again = load_splits(RunConfig(dataset=str(out), val_fraction=0.0, select_on="test"))
    direct = load_splits(RunConfig(dataset=f"hub:{repo}", val_fraction=0.0, select_on="test"))
    assert again.classes == direct.classes and again.sizes() == direct.sizes()


def test_the_new_settings_keep_old_run_ids_and_are_part_of_new_ones(tmp_path):
    plain = RunConfig(dataset="sst2")
    assert RunConfig.from_stored({k: v for k, v in plain.to_dict().items()
                                  if k not in ("text_column", "text_pair_column", "label_column", "train_split",
                                               "test_split")}).run_id == plain.run_id
    named = RunConfig(dataset="/data/mine", text_column="review", label_column="stars", test_split="dev")
    assert named.run_id != RunConfig(dataset="/data/mine").run_id
    assert RunConfig.from_dict(named.to_dict()) == named and named.run_id == RunConfig.from_dict(named.to_dict()).run_id
    hub = RunConfig(dataset="hub:tweet_eval:sentiment")
    assert hub.run_id.split("_")[1] == "hub-tweet-eval-sentiment"


def test_hub_datasets_are_labelled_by_their_id_everywhere():
    from healcore.results.runs_table import dataset_labels

    labels = dataset_labels(pd.Series(["hub:tweet_eval:sentiment", "hub:SetFit/sst5", "sst2", "/data/mine"]))
    assert labels == {"hub:tweet_eval:sentiment": "tweet_eval:sentiment", "hub:SetFit/sst5": "SetFit/sst5",
                      "sst2": "sst2", "/data/mine": "mine"}


def test_a_hub_dataset_run_offline_and_uncached_leaves_no_folder(tiny_bert, tmp_path, datasets_cache, capsys):
    store = RunStore(tmp_path / "runs")
    assert cli.main(["--store", str(store.root), "run", "--quiet", "--model", tiny_bert, "--dataset",
                     "hub:nobody/nothing_here"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("healcore: error:") and len(err.splitlines()) == 1 and "datasets cache" in err
    assert store.run_ids() == []


def test_a_run_with_named_columns_uses_them(tiny_bert, tmp_path):
    from healcore.engine.run import execute

    folder = tmp_path / "csv"
    folder.mkdir()
    frame = pd.DataFrame({"body": GOOD + BAD, "verdict": ["pos"] * 30 + ["neg"] * 30})
    frame.to_csv(folder / "train.csv", index=False)
    frame.iloc[::3].to_csv(folder / "test.csv", index=False)
    cfg = tiny_config(tiny_bert, dataset=str(folder), text_column="body", label_column="verdict", epochs=1,
                      max_train=0, max_test=0)
    summary = execute(cfg, RunStore(tmp_path / "runs"))
    assert summary["classes"] == ["neg", "pos"] and summary["data"]["columns"]["text"] == "body"


def test_the_launch_page_takes_a_folder_with_its_own_column_names(tmp_path, monkeypatch, tiny_bert):
    """The dataset picker takes a typed folder; the column options under it reach the plan's check."""
    from pages_helpers import open_page

    folder = tmp_path / "mine"
    folder.mkdir()
    frame = pd.DataFrame({"body": GOOD + BAD, "verdict": ["pos"] * 30 + ["neg"] * 30})
    frame.to_csv(folder / "train.csv", index=False)
    frame.to_csv(folder / "test.csv", index=False)
    monkeypatch.setenv("HEALCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HEALCORE_ALLOWED_ROOTS", f"{tiny_bert}:{tmp_path}")
    at = open_page("Launch")
    at.radio[0].set_value("Build a grid").run()
    next(m for m in at.multiselect if m.label == "Models").set_value([tiny_bert]).run()
    next(m for m in at.multiselect if m.label == "Datasets").set_value([str(folder)]).run()
    errors = " ".join(e.value for e in at.error)
    assert "has no label column by a usual name" in errors and "name it with --label-column" in errors
    next(t for t in at.text_input if t.label == "Label column").set_value("verdict").run()
    assert not at.exception and not at.error
    assert any(b.label == "Start" and not b.disabled for b in at.button)
