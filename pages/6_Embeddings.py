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
    """The paper's Figure 1 panels: clean, the smallest top and bottom corruption, all layers (re-initialised
    when there is a choice: its label has no method suffix, so it is the shortest)."""
    picks = []
    for prefix in ("clean", "top ", "bottom ", "all"):
        matches = [o for o in options if o.startswith(prefix)]
        if matches:
            picks.append(min(matches, key=lambda o: (len(o), options.index(o))) if prefix == "all" else matches[0])
    return picks if len(picks) >= 3 else options[:4]


def main() -> None:
    st.title("Embeddings")
    root, runs = common.load_nonempty(completed=True)
    done = runs[runs["state"] == "completed"]
    store = RunStore(root)
    c = st.columns(4)
    model = c[0].selectbox("Model", sorted(done["model"].unique()))
    datasets = sorted(done[done["model"] == model]["dataset"].unique())
    with_features = set(done[(done["model"] == model) & done["has_features"]]["dataset"])  # prefer runs that kept them
    first = next((i for i, d in enumerate(datasets) if d in with_features), 0)
    dataset = c[1].selectbox("Dataset", datasets, index=first)
    method = c[2].selectbox("Projection", ["tsne", "umap"], format_func={"tsne": "t-SNE", "umap": "UMAP"}.get)
    which = c[3].selectbox("Features", ["best", "before"],
                           format_func={"best": "after fine-tuning (best epoch)", "before": "before fine-tuning"}.get)
    sub = common.one_variant(done[(done["model"] == model) & (done["dataset"] == dataset)].copy(), "emb",
                             methods=False)
    sub["setting"] = [common.setting_label(r.side, r.level) + ("" if r.method == "reinit" or r.side == "clean"
                                                              else f" {r.method}") for r in sub.itertuples()]
    # one run per setting: the lowest seed among runs that kept features
    sub = sub.assign(missing=~sub["has_features"]).sort_values(["level", "side", "missing", "seed", "lr"])
    sub = sub.drop_duplicates("setting")
    options = sub["setting"].tolist()
    chosen = st.multiselect("Settings (one run each: lowest seed)", options, default=default_settings(options))
    panels = []
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
    chart = charts.embedding_panels(frame, [p["panel"].iloc[0] for p in panels], columns=2)  # fits the page width
    st.altair_chart(chart, width="content")
    st.caption("Silhouette: of the true labels in feature space (-1..1). kNN: 5-nearest-neighbour accuracy, 5-fold.")


main()
