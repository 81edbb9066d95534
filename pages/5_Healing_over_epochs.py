"""Healing over epochs: validation/test F1 and training loss per epoch, starting from the probe score, for runs
chosen by name (kept in the URL); running runs draw live."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore.results import charts
from healcore.results.keys import CELL_KEYS, PLACEMENT_KEYS, describe, lr_text


def labels(runs: pd.DataFrame) -> pd.Series:
    """A run's name in words, as short as tells runs apart (a chosen run's chip shows about 60 characters at
    1280 px): its setting, lr and seed; the model and dataset where the store holds several; and what sets its
    experiment apart (describe: "mean pooling", a value other than the most common one). The run id where two
    names would still be one."""
    experiment = describe(runs, [k for k in CELL_KEYS if k not in ("model", "dataset", *PLACEMENT_KEYS)])

    def name(r, extra: str) -> str:
        parts = [str(getattr(r, k)) for k in ("model", "dataset") if runs[k].nunique() > 1]
        parts += [common.setting_label(r.side, r.level), f"lr {lr_text(r.lr)}", f"seed {r.seed}"]
        return " · ".join(parts + ([extra] if extra else []))

    out = pd.Series([name(r, e) for r, e in zip(runs.itertuples(), experiment)], index=runs.index)
    twins = out.duplicated(keep=False)
    return out.where(~twins, out + " · " + runs["run_id"].astype(str))


def draw(root: str, picked: pd.DataFrame) -> None:
    epochs = common.epochs_table(root, common.store_version(root), tuple(picked["run_id"]))
    epochs = epochs.merge(picked[["run_id", "label", "probe_f1"]], on="run_id")
    start = picked[["run_id", "label", "probe_f1"]].assign(epoch=0, test_f1_weighted=picked["probe_f1"],
                                                           validation_f1_weighted=picked["probe_f1"])
    f1 = pd.concat([start, epochs], ignore_index=True).melt(
        id_vars=["label", "epoch"], value_vars=["validation_f1_weighted", "test_f1_weighted"], var_name="split",
        value_name="F1").dropna()
    f1["split"] = f1["split"].str.replace("_f1_weighted", "")
    f1_chart, loss_chart = charts.epoch_curves(f1, epochs)
    # one above the other, full width: the legend of run names needs the room
    st.altair_chart(f1_chart, width="stretch")
    st.altair_chart(loss_chart, width="stretch")


@st.fragment(run_every=3.0)
def draw_live(root: str, picked: pd.DataFrame) -> None:
    draw(root, picked)


def main() -> None:
    common.set_up_page("Healing over epochs")
    root, runs = common.load_nonempty()
    done = runs[runs["state"].isin(["completed", "running", "interrupted", "failed"])]
    if done.empty:
        common.nothing_scored_yet(runs)
        return
    done = done.assign(label=labels(done))
    by_label = dict(zip(done["label"], done["run_id"]))
    ids = done["run_id"].tolist()
    wanted = [r for r in st.query_params.get_all("run") if r in ids] or ids[:4]
    chosen = st.multiselect("Runs", done["label"].tolist(),
                            default=[done.set_index("run_id").loc[r, "label"] for r in wanted])
    common.url_set("run", [by_label[c] for c in chosen])
    if not chosen:
        st.info("Choose one or more runs.")
        return
    picked = done[done["label"].isin(chosen)]
    if (picked["state"] == "running").any():
        draw_live(root, picked)
    else:
        draw(root, picked)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
