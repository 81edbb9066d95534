"""healcore dashboard: `streamlit run app.py`.

This is the home page; the other pages are the files in pages/ (Streamlit's multipage folder). The
dashboard reads the run store through healcore.results and starts grids as separate processes.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402

from dashboard import common  # noqa: E402

st.set_page_config(page_title="healcore", page_icon=":material/healing:", layout="wide")


def main() -> None:
    st.title("healcore")
    st.markdown("How well does a pretrained language model heal when part of it is broken? Corrupt chosen "
                "layers, fine-tune, and measure what comes back.")
    root, runs = common.load()
    if runs.empty:
        common.empty_store_notice(root)
        return
    counts = runs["state"].value_counts().to_dict()
    c = st.columns(5)
    for col, state in zip(c, ("completed", "running", "queued", "interrupted", "failed")):
        col.metric(state.capitalize(), counts.get(state, 0))
    flagged = int(runs["flagged"].sum())
    if flagged:
        st.warning(f"{flagged} run(s) flagged (collapse, divergence or flat loss).")
        st.page_link(common.page("Outliers"), label="See Outliers", icon=":material/report:")
    st.subheader("Pages")
    for title, what in (("Launch", "start a preset or your own grid; watch and cancel it"),
                        ("Grid heatmaps", "a metric across model x setting x dataset"),
                        ("Degradation curves", "F1 against corruption level; the paper's claims judged"),
                        ("Healing over epochs", "per-epoch F1 and loss from the damage probe on"),
                        ("Outliers", "every flagged run with its reason"),
                        ("Embeddings", "t-SNE/UMAP small multiples with cluster quality"),
                        ("Run detail", "config, status, log, metrics, confusion matrix"),
                        ("Export", "Table 1 as CSV/Markdown/LaTeX; tidy CSV")):
        st.page_link(common.page(title), label=f"**{title}**: {what}")


main()
