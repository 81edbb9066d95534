"""Healing over epochs: validation/test F1 and train loss per epoch, starting from the probe score."""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import common


def main() -> None:
    st.title("Healing over epochs")
    root, runs = common.load()
    done = runs[runs["state"].isin(["completed", "running", "interrupted"])] if len(runs) else runs
    if done.empty:
        common.empty_store_notice(root)
        return
    done = done.assign(label=[f"{r.model} · {r.dataset} · {common.setting_label(r.side, r.level) if r.side == r.side else '?'}"
                              f" · lr {r.lr:g} · seed {r.seed}" for r in done.itertuples()])
    default = done["label"].head(4).tolist()
    chosen = st.multiselect("Runs", done["label"].tolist(), default=default)
    if not chosen:
        st.info("Choose one or more runs.")
        return
    picked = done[done["label"].isin(chosen)]
    epochs = common.epochs_table(root, common.store_version(root), tuple(picked["run_id"]))
    epochs = epochs.merge(picked[["run_id", "label", "probe_f1"]], on="run_id")
    start = picked[["run_id", "label", "probe_f1"]].assign(epoch=0, test_f1_weighted=picked["probe_f1"],
                                                           validation_f1_weighted=picked["probe_f1"])
    f1 = pd.concat([start, epochs], ignore_index=True).melt(
        id_vars=["label", "epoch"], value_vars=["validation_f1_weighted", "test_f1_weighted"], var_name="split",
        value_name="F1").dropna()
    f1["split"] = f1["split"].str.replace("_f1_weighted", "")
    c1, c2 = st.columns(2)
    c1.altair_chart(alt.Chart(f1).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch (0 = probe before fine-tuning)"), y=alt.Y("F1:Q", title="weighted F1"),
        color="label:N", strokeDash="split:N", tooltip=["label", "split", "epoch", alt.Tooltip("F1:Q", format=".2f")]
    ).properties(height=320), width="stretch")
    c2.altair_chart(alt.Chart(epochs).mark_line(point=True).encode(
        x="epoch:Q", y=alt.Y("train_loss:Q", title="train loss"), color=alt.Color("label:N", legend=None),
        tooltip=["label", "epoch", alt.Tooltip("train_loss:Q", format=".4f")]).properties(height=320), width="stretch")


main()
