"""healcore dashboard: `streamlit run app.py`. Reads the run store; starts grids as separate processes."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402

from dashboard import common  # noqa: E402

st.set_page_config(page_title="healcore", page_icon=":material/healing:", layout="wide")

PAGE_FILES = [
    ("pages/launch.py", "Launch", ":material/rocket_launch:"),
    ("pages/heatmaps.py", "Grid heatmaps", ":material/grid_on:"),
    ("pages/curves.py", "Degradation curves", ":material/show_chart:"),
    ("pages/epochs.py", "Healing over epochs", ":material/timeline:"),
    ("pages/outliers.py", "Outliers", ":material/report:"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("pages/run_detail.py", "Run detail", ":material/description:"),
    ("pages/export.py", "Export", ":material/download:"),
]
pages = [st.Page(f, title=t, icon=i, default=(t == "Grid heatmaps")) for f, t, i in PAGE_FILES]
for (f, t, _), page in zip(PAGE_FILES, pages):
    common.PAGES[t] = page

with st.sidebar:
    st.markdown("### healcore")
    st.text_input("Run store", value=os.environ.get("HEALCORE_RUNS", "runs"), key="store_root",
                  help="Folder with one sub-folder per run (healcore --store). Relative to where streamlit started.")

st.navigation(pages).run()
