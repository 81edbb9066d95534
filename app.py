"""healcore dashboard: `streamlit run app.py`.

This file is the Home page: the store at a glance (runs by state, flags, grids in progress with their ETA),
refreshed while runs are in flight, and the way to every page. The other pages are pages/*.py; their navigation
is dashboard/common.py. Pages read the run store through healcore and start grids as separate processes.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402

from dashboard import common  # noqa: E402
from healcore.grids.progress import fmt_duration, grid_progress  # noqa: E402
from healcore.store.grids import grid_records  # noqa: E402
from healcore.store.runs import RunStore

STATES = ("completed", "running", "queued", "interrupted", "failed")
STATE_HELP = {"failed": "Runs that ended with an error (NaN loss, out of memory, a crash): convergence failures, "
                        "left out of their cells", "interrupted": "Stopped (cancelled or killed): the next grid or run command resumes "
                                                  "them"}
REFRESH_S = 3.0


def store_at_a_glance(root: str) -> None:
    runs = common.runs_table(root, common.store_version(root))
    counts = runs["state"].value_counts().to_dict() if len(runs) else {}
    cols = st.columns(len(STATES) + 1)
    for col, state in zip(cols, STATES):
        col.metric(state.capitalize(), counts.get(state, 0), help=STATE_HELP.get(state))
    flagged = int(runs["flagged"].sum()) if len(runs) and "flagged" in runs else 0
    cols[-1].metric("Flagged runs", flagged, help=(
        "Runs kept as measurements, with something to know: they did not learn (one class predicted, or a loss "
        "that did not fall), a seed strays from its siblings, or a file beside the score is damaged. Runs that "
        "crashed or diverged are under Failed. Every page counts them the same way."))
    if runs.empty:
        common.empty_store_notice(root)
        return
    common.flag_banner(runs, common.load_cells(root))
    live = [grid_progress(rec, runs) for rec in grid_records(RunStore(root)) if rec.get("alive")]
    for g in live:
        st.markdown(f"**Grid {g['name']}** running: {g['completed']} of {g['runs']} done, {g['running']} running, "
                    f"{g['queued']} queued, {g['failed']} failed · elapsed {fmt_duration(g['elapsed_s'])} · "
                    f"ETA {fmt_duration(g['eta_s'])}")
        st.progress(g["share"])
    if live:
        st.page_link(common.page("Launch"), label="Follow or cancel it on Launch", icon=":material/rocket_launch:")


@st.fragment(run_every=REFRESH_S)
def live_glance(root: str) -> None:
    store_at_a_glance(root)


def main() -> None:
    common.set_up_page("healcore")
    st.markdown("How well does a pretrained language model heal when part of it is broken? Corrupt chosen "
                "layers, fine-tune, and measure what comes back.")
    root, runs = common.load()
    if len(runs) and (runs["state"].isin(["running", "queued"])).any():
        live_glance(root)  # refreshes itself while runs are in flight
    else:
        store_at_a_glance(root)
    st.subheader("Pages")
    for title, what in (("Launch", "start a preset or your own grid; watch it with its ETA, cancel it"),
                        ("Runs", "every run: filter, sort, group with mean ± std, compare configs and curves"),
                        ("Grid heatmaps", "a metric across model x setting x dataset; click a cell for its runs"),
                        ("Degradation curves", "F1 against corruption level; the paper's claims judged"),
                        ("Healing over epochs", "per-epoch F1 and loss from the damage probe on"),
                        ("Where healing happens", "layer similarity (CKA), weight movement, per-class recovery"),
                        ("Failures and surprises", "every convergence failure and every surprising cell"),
                        ("Embeddings", "t-SNE/UMAP small multiples with cluster quality"),
                        ("Run detail", "flags, curves, config, log and files of one run"),
                        ("Export", "Table 1 as CSV/Markdown/LaTeX; tidy CSV")):
        st.page_link(common.page(title), label=f"**{title}**: {what}")


main()
