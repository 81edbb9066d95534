"""Where healing happens: linear CKA (known properties), what a run stores for it, and the tables built from it."""
import json

import numpy as np
import pytest

from healcore.engine.run import execute
from healcore.results.analysis import cka_matrix, linear_cka, load_analysis

from conftest import tiny_config


def _random(n=200, p=30, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p))


def test_cka_of_a_representation_with_itself_is_one():
    X = _random()
    assert linear_cka(X, X) == pytest.approx(1.0)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    X, Y = _random(seed=0), _random(p=20, seed=1) + _random(p=20, seed=0)[:, :20]
    Q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(30, 30)))
    assert linear_cka(X @ Q, Y) == pytest.approx(linear_cka(X, Y))
    assert linear_cka(3.7 * X, 0.2 * Y) == pytest.approx(linear_cka(X, Y))
    assert linear_cka(X + 5.0, Y) == pytest.approx(linear_cka(X, Y))  # centring: offsets do not matter


def test_cka_tells_related_from_unrelated_representations():
    X = _random()
    related = X @ np.random.default_rng(3).normal(size=(30, 30)) * 0.1 + X
    unrelated = _random(seed=9)
    assert linear_cka(X, related) > 0.8 > 0.3 > linear_cka(X, unrelated)


def test_cka_matrix_agrees_with_pairwise_cka():
    A = np.stack([_random(seed=s) for s in range(3)])
    B = np.stack([_random(seed=s) for s in (0, 5)])
    M = cka_matrix(A, B)
    assert M.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert M[i, j] == pytest.approx(linear_cka(A[i], B[j]))
    assert M[0, 0] == pytest.approx(1.0)


def test_a_frozen_body_keeps_the_pretrained_layers_and_only_the_head_moves(tiny_bert, store):
    """A linear probe trains no encoder weight: its layers stay the pretrained ones (CKA 1) except the ones the
    corruption replaced, and only the head moves."""
    cfg = tiny_config(tiny_bert, mode="linear_probe", corrupt="bottom:1", epochs=1, analysis_samples=40)
    summary = execute(cfg, store)
    analysis = load_analysis(store, cfg.run_id)
    assert analysis["layers"].shape == (5, 40, 32) and list(analysis["corrupted_layers"]) == [1]
    diag = np.diag(analysis["cka_pretrained"])
    assert diag[0] == pytest.approx(1.0, abs=1e-4)  # the embedding output: untouched
    assert diag[1] < 0.99  # layer 1 was re-initialised
    assert list(summary["weight_movement"]) == ["head"] and summary["weight_movement"]["head"] > 0
    per_class = summary["per_class"]
    assert per_class["classes"] == ["negative", "positive"] and len(per_class["probe"]) == len(per_class["best"]) == 2


def test_full_fine_tuning_records_movement_per_layer(tiny_bert, store):
    cfg = tiny_config(tiny_bert, corrupt="top:2", epochs=1, analysis_samples=0)
    summary = execute(cfg, store)
    moved = summary["weight_movement"]
    assert list(moved) == ["embeddings", "layer 1", "layer 2", "layer 3", "layer 4", "pooler", "head"]
    assert all(v > 0 for v in moved.values())
    assert not store.files(cfg.run_id).analysis.exists()  # analysis_samples=0 keeps none
    # read back from summary.json (whose keys are sorted), the blocks still go from input to output
    from healcore import results
    from healcore.results import analysis

    table = analysis.movement_table(store, results.load_runs(store.root))
    assert list(table.sort_values("order")["block"]) == list(moved)
    assert "analysis_samples" not in json.loads(cfg.canonical_json())  # an artefact setting, not the run's identity


def test_the_layer_analyses_read_each_cells_runs_at_its_kept_learning_rate(tmp_path):
    """A cell's F1 comes from the runs at its kept learning rate; the per-class recovery, CKA and movement shown
    beside it must come from the same runs, not from every learning rate tried."""
    from healcore import results
    from healcore.results import analysis
    from healcore.results import synthetic as syn
    from healcore.results.report import class_summary

    store = syn.build(tmp_path / "runs", levels=(0, 2, 6), seeds=(0, 1), analysis=True)
    runs = results.load_runs(store.root)
    table = results.reinit_only(results.cells(runs))
    scored = results.scored_runs(runs, table)
    assert set(runs["lr"]) == {2e-5, 5e-5} and len(scored) == len(runs) // 2
    for cell in table.itertuples():
        assert set(scored[scored["run_id"].isin(cell.run_ids)]["lr"]) == {cell.lr}
    per_class = analysis.per_class_table(store, scored)
    summary = class_summary(per_class).set_index("setting")
    for cell in table[table["side"] != "clean"].itertuples():
        # synthetic runs score every class at the run's F1, so the healed mean per class is the cell's F1
        healed = summary.loc[results.setting_label(cell.side, cell.level), "mean F1 healed"]
        assert healed == pytest.approx(cell.f1)
    assert set(analysis.similarity_table(store, scored)["lr"]) <= set(table["lr"])


def test_the_reports_layer_section_names_the_debiased_estimator_and_its_chance_level(tmp_path):
    """A reader of the report must know which CKA it prints: the plain estimator's chance level is 0.43 here."""
    from healcore import results
    from healcore.results import analysis, charts
    from healcore.results import synthetic as syn
    from healcore.results.report import _settings, write_report

    store = syn.build(tmp_path / "runs", levels=(0, 2, 6), seeds=(0, 1), analysis=True)
    text = write_report(store.root, tmp_path / "out").read_text()
    section = text.split("## Where healing happens", 1)[1]
    assert "debiased linear CKA" in section and "about 0" in section and "0.43" in section
    matrices = _settings(analysis.mean_cka_matrices(store, results.load_runs(store.root)))
    legend = charts.cka_small_multiples(matrices).to_dict()["spec"]["encoding"]["color"]
    assert legend["title"] == ["debiased CKA", "(0: chance)"]
