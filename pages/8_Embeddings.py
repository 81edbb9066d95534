"""Embeddings: t-SNE/UMAP of stored features as small multiples across corruption settings (the paper's
Figure 1: clean, top 25%, bottom 25%, all), coloured by true class (distinct colours up to 20 classes), each
panel naming its run and seed, with silhouette and kNN accuracy."""
import pandas as pd
import streamlit as st

from dashboard import common
from healcore.core.config import CORRUPTION_FIELDS
from healcore.results import charts
from healcore.results.keys import damage_label, lr_text
from healcore.results.projection import is_cached, project
from healcore.store.io import npz_problem
from healcore.store.runs import RunStore


@st.cache_data(show_spinner=False, max_entries=64)
def projection(root: str, run_id: str, which: str, method: str, mtime: float) -> dict | None:
    return project(RunStore(root).files(run_id), which, method)


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
    common.set_up_page("Embeddings")
    root, runs = common.load_nonempty()
    done = runs[runs["state"] == "completed"]
    if done.empty:
        common.nothing_scored_yet(runs)
        return
    store = RunStore(root)
    c = st.columns(4)
    model = common.url_selectbox("Model", sorted(done["model"].unique()), key="model", container=c[0])
    datasets = sorted(done[done["model"] == model]["dataset"].unique())
    with_features = [d for d in datasets if d in set(done[(done["model"] == model) & done["has_features"]]["dataset"])]
    dataset = common.url_selectbox("Dataset", datasets, key="dataset", container=c[1],
                                   default=with_features[0] if with_features else datasets[0])
    method = common.url_selectbox("Projection", ["tsne", "umap"], key="projection", container=c[2],
                                  format_func={"tsne": "t-SNE", "umap": "UMAP"}.get)
    which = common.url_selectbox("Features", ["best", "before"], key="features", container=c[3],
                                 format_func={"best": "healed (best epoch)", "before": "before fine-tuning"}.get,
                                 help="healed: after fine-tuning, at the epoch chosen on validation")
    sub = common.one_variant(done[(done["model"] == model) & (done["dataset"] == dataset)].copy(),
                             exclude=CORRUPTION_FIELDS)
    sub["setting"] = [damage_label(r) for r in sub.to_dict("records")]
    # one run per setting: the lowest seed among runs that kept features
    sub = sub.assign(missing=~sub["has_features"]).sort_values(["level", "side", "missing", "seed", "lr"])
    sub = sub.drop_duplicates("setting")
    options = sub["setting"].tolist()
    chosen = common.url_multiselect("Settings (one run each: the lowest seed that kept features)", options,
                                    key="setting", default=default_settings(options), all_means_none=False)
    panels = []
    picked = {setting: sub[sub["setting"] == setting].iloc[0] for setting in chosen}
    to_compute = [s for s, r in picked.items() if store.files(r["run_id"]).features(which).is_file()
                  and not is_cached(store.files(r["run_id"]), which, method)]
    bar = st.progress(0.0, text=f"Projecting {len(to_compute)} panel(s) with {method.upper()} (once: the result is "
                                f"kept on disk next to the features)...") if to_compute else None
    for setting, r in picked.items():
        feat = store.files(r["run_id"]).features(which)
        if not feat.is_file():
            st.warning(f"{setting}: no stored {which} features")
            continue
        if bar is not None and setting in to_compute:
            done_so_far = to_compute.index(setting)
            bar.progress(done_so_far / len(to_compute), text=f"Projecting {setting} ({done_so_far + 1} of "
                                                             f"{len(to_compute)}; kept on disk once done)...")
        proj = projection(root, r["run_id"], which, method, feat.stat().st_mtime)
        if proj is None:
            problem = npz_problem(feat)
            st.warning(f"{setting}: its {which} features cannot be read ({problem}); healcore status says what a "
                       f"rerun does" if problem else f"{setting}: too few stored {which} features to project")
            continue
        classes = (store.summary(r["run_id"]) or {}).get("classes") or []
        labels = [classes[i] if i < len(classes) else str(i) for i in proj["labels"]]
        title = (f"{setting} · seed {r['seed']} · lr {lr_text(r['lr'])} · {r['run_id'][-10:]} · silhouette "
                 f"{proj['silhouette']:.2f} · kNN {proj['knn_accuracy']:.1f}%")
        panels.append(pd.DataFrame({"x": proj["xy"][:, 0], "y": proj["xy"][:, 1], "label": labels, "panel": title}))
    if bar is not None:
        bar.empty()
    if not panels:
        st.info("Pick at least one setting with stored features.")
        return
    frame = pd.concat(panels, ignore_index=True)
    chart = charts.embedding_panels(frame, [p["panel"].iloc[0] for p in panels], columns=2, size=260)
    st.altair_chart(chart)
    st.caption("Silhouette: of the true labels in feature space (-1..1). kNN: 5-nearest-neighbour accuracy, 5-fold. "
               "Each panel names its run (the id's last characters, as in Run detail), seed and learning rate.")


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
