
import numpy as np
import pandas as pd
import pytest

from healcore.core.config import RunConfig
from healcore.core.data import REGISTRY, build_splits, load_raw, load_splits, stratified_take
from healcore.core.errors import DataError


def write_folder(folder, train, test, kind="csv"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        df = pd.DataFrame(rows)
        if kind == "csv":
            df.to_csv(folder / f"{name}.csv", index=False)
        elif kind == "csv.gz":
            df.to_csv(folder / f"{name}.csv.gz", index=False, compression="gzip")
        elif kind == "jsonl":
            df.to_json(folder / f"{name}.jsonl", orient="records", lines=True)
        elif kind == "parquet":
            df.to_parquet(folder / f"{name}.parquet")
    return folder


ROWS = [{"text": f"good {i}", "label": "pos"} for i in range(20)] + \
       [{"text": f"bad {i}", "label": "neg"} for i in range(20)]


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "jsonl", "parquet"])
def test_local_folder_in_every_format(tmp_path, kind):
    folder = write_folder(tmp_path / "d", ROWS, ROWS[:10] + ROWS[-10:], kind)
    splits = load_splits(RunConfig(dataset=str(folder), val_fraction=0.25))
    assert splits.classes == ["neg", "pos"]
    assert splits.sizes() == {"train": 30, "validation": 10, "test": 20}
    assert sorted(np.bincount(splits.validation["label"])) == [5, 5]  # stratified carve-out


def test_integer_labels_and_pairs(tmp_path):
    rows = [{"text": f"a{i}", "text_pair": f"b{i}", "label": i % 3} for i in range(30)]
    splits = load_splits(RunConfig(dataset=str(write_folder(tmp_path / "d", rows, rows, "jsonl"))))
    assert splits.classes == ["0", "1", "2"] and splits.has_pair


def test_registry_reads_shared_data_through_healcore_data():
    for name in ("sst2", "ag_news", "emotion", "dbpedia_14", "imdb", "mrpc", "rte"):
        chosen = load_raw(name)
        assert chosen.where.startswith("folder") and chosen.hint == REGISTRY[name].classes
        assert set(chosen.train["label"]) <= set(chosen.hint) and chosen.notes == []  # healcore's own columns


def test_paper_split_sizes_are_stratified_and_capped():
    splits = load_splits(RunConfig(dataset="emotion", split="paper", val_fraction=0.1))
    assert len(splits.test) == 4000 and len(splits.train) + len(splits.validation) == 14000
    s2 = load_splits(RunConfig(dataset="sst2", split="paper"))
    total = len(s2.train) + len(s2.validation) + len(s2.test)
    assert total == 30872 and "capped by what exists" in s2.notes[0]


def test_caps_are_stratified():
    splits = load_splits(RunConfig(dataset="ag_news", max_train=400, max_test=200, val_fraction=0.0,
                                   select_on="test"))
    full = np.bincount(load_splits(RunConfig(dataset="ag_news", val_fraction=0.0, select_on="test")).train["label"])
    expected = full * 400 / full.sum()
    assert np.all(np.abs(np.bincount(splits.train["label"]) - expected) < 1) and len(splits.train) == 400
    assert len(splits.test) == 200


def test_stratified_take_counts_sum_exactly():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    idx = stratified_take(labels, 33, np.random.default_rng(0))
    assert len(idx) == 33 and np.bincount(labels[idx]).tolist() == [23, 7, 3]


def test_empty_texts_are_dropped_and_counted(tmp_path):
    rows = ROWS + [{"text": "  ", "label": "pos"}, {"text": None, "label": "neg"}]
    splits = load_splits(RunConfig(dataset=str(write_folder(tmp_path / "d", rows, ROWS))))
    assert any("dropped empty texts: 2 train" in n for n in splits.notes)


def test_a_registry_dataset_without_a_folder_loads_from_the_hub_through_the_datasets_cache(tmp_path, monkeypatch,
                                                                                         datasets_cache):
    """The registry's hub path with the real datasets.load_dataset: stanfordnlp/sst2 as a download leaves it in the
    cache (train / validation / test, the test labels hidden as -1), read offline; the registry's columns (sentence,
    label) and its test split (validation) are used."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from conftest import prefill_datasets_cache

    features = Features({"idx": Value("int32"), "sentence": Value("string"),
                         "label": ClassLabel(names=["negative", "positive"])})
    rows = {"idx": [0, 1, 2, 3], "sentence": ["fine", "awful", "great", "bad"], "label": [1, 0, 1, 0]}
    hidden = {**rows, "label": [-1] * 4}  # as GLUE publishes its test split
    prefill_datasets_cache(datasets_cache, "stanfordnlp/sst2", DatasetDict({
        "train": Dataset.from_dict(rows, features=features), "validation": Dataset.from_dict(rows, features=features),
        "test": Dataset.from_dict(hidden, features=features)}), tmp_path)
    monkeypatch.setenv("HEALCORE_DATA", str(tmp_path))  # no sst2/ folder there: the hub path
    chosen = load_raw("sst2")
    assert chosen.where == "hub stanfordnlp/sst2" and chosen.splits == {"train": "train", "test": "validation",
                                                                        "validation": None}
    assert list(chosen.train.columns) == ["text", "label"] and chosen.hint == ("negative", "positive")


def test_hub_unreachable_gives_actionable_error(monkeypatch, tmp_path, datasets_cache):
    monkeypatch.setenv("HEALCORE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="set HEALCORE_DATA") as info:
        load_raw("sst2")
    assert "not in this machine's datasets cache" in str(info.value) and "\n" not in str(info.value)


def test_export_round_trip(tmp_path):
    from healcore.cli import main

    out = tmp_path / "rte"
    assert main(["data", "export", "rte", str(out)]) == 0  # the foundations give the bytes, the CLI writes them
    train, test = (pd.read_csv(out / f"{split}.csv.gz", keep_default_na=False) for split in ("train", "test"))
    assert len(train) == 2490 and len(test) == 277 and set(train["label"]) == {"entailment", "not_entailment"}
    assert list(train.columns) == ["text", "text_pair", "label"]


# ---------------------------------------------------------------------------------- bad data, one line each
def _bad_cases(tmp):
    def folder(name, train=None, test=None, kind="csv", raw_train=None, raw_test=None):
        d = tmp / name
        d.mkdir()
        for split, rows, raw in (("train", train, raw_train), ("test", test, raw_test)):
            path = d / f"{split}.{kind}"
            if raw is not None:
                path.write_bytes(raw)
            elif rows is not None:
                df = pd.DataFrame(rows)
                if kind == "csv":
                    df.to_csv(path, index=False)
                else:
                    df.to_json(path, orient="records", lines=True)
        return str(d)

    return [
        ("missing folder", str(tmp / "nope"), "unknown dataset"),
        ("no test file", folder("a", train=ROWS), "no test file"),
        ("empty csv", folder("b", raw_train=b"", raw_test=b""), "is empty"),
        ("header only", folder("c", raw_train=b"text,label\n", raw_test=b"text,label\n"), "no rows"),
        ("missing label column", folder("d", train=[{"text": "x"}] * 3, test=[{"text": "x"}] * 3),
         "has no label column by a usual name"),
        ("missing text column", folder("e", train=[{"body_text": "x", "label": 1}] * 3,
                                       test=[{"body_text": "x", "label": 1}] * 3), "has no text column by a usual name"),
        ("one class", folder("f", train=ROWS[:20], test=ROWS[:20]), "only one class"),
        ("unseen test label", folder("g", train=ROWS, test=ROWS + [{"text": "?", "label": "meh"}]), "never seen in train"),
        ("non utf8", folder("h", raw_train=b"text,label\n\xff\xfe bad,pos\nok,neg\n",
                            raw_test=b"text,label\nok,pos\n"), "not UTF-8"),
        ("malformed jsonl", folder("i", kind="jsonl", raw_train=b'{"text": "a", "label"\n', raw_test=b"{}\n"),
         "could not be read"),
        ("malformed parquet", folder("j", kind="parquet", raw_train=b"PAR1garbage", raw_test=b"PAR1garbage"),
         "could not be read"),
        ("all texts empty", folder("k", train=[{"text": " ", "label": "a"}, {"text": "", "label": "b"}],
                                   test=ROWS), "no usable rows"),
        ("empty label", folder("l", raw_train=b"text,label\nhello,\nbye,neg\n", raw_test=b"text,label\nx,neg\n"),
         "empty label"),
        ("pair in one split only", folder("m", train=[{"text": "a", "text_pair": "b", "label": "x"},
                                                      {"text": "c", "text_pair": "d", "label": "y"}],
                                          test=[{"text": "a", "label": "x"}]), "text_pair"),
        ("unknown registry name", "sst3", "unknown dataset"),
    ]


def test_bad_data_gives_one_line_error_before_training(tmp_path):
    for label, dataset, match in _bad_cases(tmp_path):
        with pytest.raises(DataError) as info:
            load_splits(RunConfig(dataset=dataset))
        msg = str(info.value)
        assert match in msg, (label, msg)
        assert "\n" not in msg, label


def test_label_ids_out_of_registry_range(tmp_path, monkeypatch):
    d = tmp_path / "sst2"
    write_folder(d, [{"text": "a", "label": 5}, {"text": "b", "label": 0}], [{"text": "a", "label": 0}])
    monkeypatch.setenv("HEALCORE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="label ids must be 0..1"):
        load_splits(RunConfig(dataset="sst2"))


def test_ten_thousand_classes_and_a_megabyte_text(tmp_path):
    rows = [{"text": f"t{i}", "label": f"c{i % 10000}"} for i in range(20000)]
    rows[0]["text"] = "x " * 500_000
    splits = build_splits(pd.DataFrame(rows), pd.DataFrame(rows[:100]), None, "mem", val_fraction=0.0)
    assert len(splits.classes) == 10000 and len(splits.train.loc[0, "text"]) == 1_000_000
