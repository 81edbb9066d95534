"""Where healing happens: does fine-tuning rebuild the destroyed layers' function, or do other layers take
over? Per corruption setting: linear CKA between every layer of the healed model and every layer of the clean
fine-tuned model; per layer, the similarity to the same layer of the clean or the pretrained model, bottom vs
top; how far each block's weights moved; and which classes heal. First: does the damage, measured before
fine-tuning, predict how much heals?"""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore import results
from healcore.core.config import CORRUPTION_FIELDS
from healcore.results import analysis, charts, damage
from healcore.store.runs import RunStore


@st.cache_data(show_spinner="Comparing layers (CKA, cached next to the runs)...", max_entries=16)
def tables(root: str, version: tuple, run_ids: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    runs = common.runs_table(root, version)
    runs = runs[runs["run_id"].isin(run_ids)]
    store = RunStore(root)
    return {"matrices": analysis.mean_cka_matrices(store, runs),
            "layers": analysis.similarity_table(store, runs),
            "movement": analysis.movement_table(store, runs),
            "classes": analysis.per_class_table(store, runs)}


def with_setting(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["setting"] = [results.setting_label(s, l) for s, l in zip(frame["side"], frame["level"])]
    frame["level_label"] = [f"{int(round(100 * l))}% of the layers" for l in frame["level"]]
    return frame


def damage_predicts_healing(root: str, model: str, dataset: str) -> None:
    """Each damage measure before fine-tuning against what fine-tuning left, over this model's and dataset's
    corrupted cells (every kind of damage): a scatter of the chosen pair, and Spearman's rho of every pair."""
    st.subheader("Does damage predict healing?")
    table = common.cells_table(root, common.store_version(root))
    table = table[(table["model"] == model) & (table["dataset"] == dataset)]
    points = damage.damage_points(table)
    if len(points) < damage.MIN_CELLS:
        st.caption(f"{len(points)} corrupted cell(s) with a clean cell beside them: {damage.MIN_CELLS} are needed "
                   f"for a rank correlation.")
        return
    c = st.columns(2)
    measure = common.url_selectbox("Damage measure", list(damage.MEASURES), key="measure", container=c[0],
                                   format_func=damage.MEASURES.get)
    outcome = common.url_selectbox("Against", list(damage.OUTCOMES), key="outcome", container=c[1],
                                   format_func=damage.OUTCOMES.get)
    st.altair_chart(charts.damage_scatter(points, measure, outcome, damage.MEASURES[measure],
                                          damage.OUTCOMES[outcome]))
    rows = damage.predictors(table)
    st.dataframe(rows.drop(columns=["model", "dataset"]), hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%+.2f") for k in ("rho", "lo", "hi")})
    st.caption("One point per corrupted cell (mean of its seeds at its kept learning rate). Spearman's rho over the "
               "cells, with a bootstrap 95% interval (2,000 resamples of the cells); where the interval spans 0 the "
               "measure does not predict the outcome here. Probe drop: the clean cell's damage-probe F1 minus the "
               "cell's; angular / Block Influence shift: how much the damaged layers' turn of their input changed "
               "before fine-tuning (for removed layers, the turn that is gone).")


def main() -> None:
    common.set_up_page("Where healing happens")
    root, runs = common.load_nonempty()
    done = runs[(runs["state"] == "completed")]
    if done.empty:
        common.nothing_scored_yet(runs)
        return
    c = st.columns(2)
    model = common.url_selectbox("Model", sorted(done["model"].unique()), key="model", container=c[0])
    with_analysis = done[(done["model"] == model) & done["has_analysis"]]
    datasets = sorted(done[done["model"] == model]["dataset"].unique())
    dataset = common.url_selectbox("Dataset", datasets, key="dataset", container=c[1],
                                   default=with_analysis["dataset"].iloc[0] if len(with_analysis) else datasets[0])
    damage_predicts_healing(root, model, dataset)
    sub = common.one_variant(results.reinit_only(done[(done["model"] == model) & (done["dataset"] == dataset)]),
                             exclude=CORRUPTION_FIELDS)
    if not sub["has_analysis"].any():
        st.info("These runs kept no layer analyses: runs made before healcore recorded them, or run with "
                "analysis_samples=0. Run the grid again in a new store (or another grid) to see where healing happens.")
        return
    unreadable = [r for r, damage in zip(sub["run_id"], sub["damaged"]) if any(d.startswith("analysis.npz")
                                                                              for d in damage)]
    if unreadable:
        st.warning(f"{len(unreadable)} run(s) of this line have a damaged analysis.npz and are left out "
                   f"({', '.join(unreadable[:3])}{' ...' if len(unreadable) > 3 else ''}); healcore status says what "
                   f"a rerun does")
    # each cell's runs at its kept learning rate: the runs whose F1 the heatmaps show
    version = common.store_version(root)  # a scan of the store: once per render
    sub = results.scored_runs(sub, common.cells_table(root, version))
    t = tables(root, version, tuple(sub["run_id"]))
    st.subheader("Healed layers against the clean fine-tuned model (debiased linear CKA)")
    if len(t["matrices"]):
        matrices = with_setting(t["matrices"])
        st.altair_chart(charts.cka_small_multiples(matrices))
        st.caption("Rows: layers of the corrupted-then-fine-tuned model; columns: layers of the clean model fine-tuned "
                   "the same way (same learning rate and seed where one exists), on the same test sentences; each "
                   "cell's runs at its kept learning rate, mean over seeds. A bright diagonal: each layer computes "
                   "what the clean model's does; brightness off the diagonal: other layers took the role. A "
                   "re-initialised layer can look alike without relearning anything, because the residual "
                   "connection carries its input through it: read it with the weight movement below. CKA here is "
                   f"{analysis.CKA_IN_WORDS}.")
    else:
        st.caption("Needs the clean run of this line with its layer analyses.")
    st.subheader("Similarity of each layer to the same layer of a reference model")
    reference = st.radio("Reference", ["clean fine-tuned model", "pretrained model (before corruption)"],
                         horizontal=True, key="where-ref")
    column = "cka_clean" if reference.startswith("clean") else "cka_pretrained"
    layers = t["layers"]
    if len(layers):
        mean = layers.groupby(["side", "level", "layer", "depth"], as_index=False).agg(
            **{column: (column, "mean"), "runs": ("run_id", "nunique"), "corrupted": ("corrupted", "max")})
        st.altair_chart(charts.layer_similarity(with_setting(mean), column, f"CKA to the {reference.split(' (')[0]}"))
        st.caption("Diamonds: layers that were corrupted; the dotted rule at 0 is chance (debiased CKA of unrelated "
                   "representations). A corrupted layer that climbs back towards 1 was rebuilt; one that stays low "
                   "while the layers after it stay high was routed around.")
        notes = sorted({n for n in layers.get("partner_note", pd.Series(dtype=object)) if n})
        if notes:
            st.info("Some runs have no clean partner of the same seed and learning rate: " + "; ".join(notes)
                    + ". Their CKA to the clean model compares across that difference too.")
        if column == "cka_pretrained" and layers["cka_pretrained"].isna().all():
            st.caption("No CKA to the pretrained model: these runs stored it with the older, biased estimator; "
                       "running them again stores the debiased one.")
    st.subheader("How far fine-tuning moved each block's weights")
    movement = t["movement"]
    if len(movement):
        moved = movement.groupby(["side", "level", "block", "order"], as_index=False).agg(
            movement=("movement", "mean"), runs=("run_id", "nunique"), corrupted=("corrupted", "max"))
        moved = with_setting(moved)
        st.altair_chart(charts.weight_movement(moved))
        st.caption("||W_T − W_0|| / ||W_0|| per block, W_0 at the start of fine-tuning (after the corruption), W_T at "
                   "its end; mean over runs.")
    st.subheader("Which classes heal")
    classes = t["classes"]
    if len(classes):
        options = sorted(set(results.setting_label(s, l) for s, l in zip(classes["side"], classes["level"])))
        picks = common.url_multiselect("Settings", options, key="where-setting", default=options[:3],
                                       all_means_none=False)
        shown = with_setting(classes)
        shown = shown[shown["setting"].isin(picks)].groupby(["setting", "class"], as_index=False)[
            ["before", "after", "clean"]].mean()
        if len(shown):
            st.altair_chart(charts.class_recovery(shown))
            st.caption("Per class F1 (mean over seeds): the damage probe before fine-tuning, the healed model at its "
                       "best epoch, and the clean model fine-tuned the same way.")


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
