"""Embeddings: t-SNE/UMAP of stored features as small multiples across corruption settings (the paper's
Figure 1: clean, top 25%, bottom 25%, all), coloured by label, with silhouette and kNN accuracy per panel."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore import charts
from healcore.projection import project
from healcore.store import RunStore


@st.cache_data(show_spinner="Projecting features (cached on disk next to them)...", max_entries=64)
def projection(run_dir: str, which: str, method: str, mtime: float) -> dict | None:
    return project(run_dir, which, method)


def default_settings(options: list[str]) -> list[str]:
    wanted = [o for o in options if o.startswith(("clean", "top 25%", "bottom 25%", "all"))]
    return wanted if len(wanted) >= 3 else options[:4]


def main() -> None:
    st.title("Embeddings")
    root, runs = common.load()
    done = runs[runs["state"] == "completed"] if len(runs) else runs
    if done.empty:
        common.empty_store_notice(root)
        return
    c = st.columns(4)
    model = c[0].selectbox("Model", sorted(done["model"].unique()))
    dataset = c[1].selectbox("Dataset", sorted(done[done["model"] == model]["dataset"].unique()))
    method = c[2].selectbox("Projection", ["tsne", "umap"], format_func={"tsne": "t-SNE", "umap": "UMAP"}.get)
    which = c[3].selectbox("Features", ["best", "before"],
                           format_func={"best": "after fine-tuning (best epoch)", "before": "before fine-tuning"}.get)
    sub = done[(done["model"] == model) & (done["dataset"] == dataset)].copy()
    sub["setting"] = [common.setting_label(r.side, r.level) + ("" if r.method == "reinit" or r.side == "clean"
                                                              else f" {r.method}") for r in sub.itertuples()]
    sub = sub.sort_values(["level", "side", "seed", "lr"]).drop_duplicates("setting")  # one run per setting
    options = sub["setting"].tolist()
    chosen = st.multiselect("Settings (one run each: lowest seed)", options, default=default_settings(options))
    panels = []
    store = RunStore(root)
    for setting in chosen:
        r = sub[sub["setting"] == setting].iloc[0]
        run_dir = store.path(r["run_id"])
        feat = run_dir / "features" / f"{which}.npz"
        if not feat.is_file():
            st.warning(f"{setting}: no stored {which} features")
            continue
        proj = projection(str(run_dir), which, method, feat.stat().st_mtime)
        if proj is None:
            continue
        classes = (store.summary(r["run_id"]) or {}).get("classes") or []
        labels = [classes[i] if i < len(classes) else str(i) for i in proj["labels"]]
        title = f"{setting} · silhouette {proj['silhouette']:.2f} · kNN {proj['knn_accuracy']:.1f}%"
        panels.append(pd.DataFrame({"x": proj["xy"][:, 0], "y": proj["xy"][:, 1], "label": labels, "panel": title}))
    if not panels:
        st.info("Pick at least one setting with stored features.")
        return
    frame = pd.concat(panels, ignore_index=True)
    chart = charts.embedding_panels(frame, [p["panel"].iloc[0] for p in panels])
    st.altair_chart(chart, width="content")
    st.caption("Silhouette: of the true labels in feature space (-1..1). kNN: 5-nearest-neighbour accuracy, 5-fold.")


main()
