"""Launch: pick a preset or build a grid, see its cost, start it as a background process, watch, cancel."""
import time

import pandas as pd
import streamlit as st

from dashboard import common
from healcore import grid as grids
from healcore.data import REGISTRY
from healcore.errors import HealcoreError
from healcore.paths import check_spec_paths, confine
from healcore.store import RunStore, epoch_rows


def grid_builder() -> dict:
    """Widgets -> a plain grid-spec dict (the same format as presets/*.yaml)."""
    c1, c2 = st.columns(2)
    with c1:
        models = st.multiselect("Models", ["minilm-l6", "minilm-l3", "bert-base-uncased", "bert-large-uncased",
                                           "distilbert-base-uncased", "roberta-base"], default=["minilm-l6"],
                                accept_new_options=True, help="Short name, hub id, or a local folder")
        datasets = st.multiselect("Datasets", list(REGISTRY), default=["sst2"], accept_new_options=True,
                                  help="Registry names, or a folder with train/test files")
        levels = st.multiselect("Corruption levels (% of layers, or type a layer count)",
                                ["0%", "25%", "50%", "75%", "100%"], default=["0%", "50%", "100%"],
                                accept_new_options=True)
        sides = st.multiselect("Sides", ["bottom", "top"], default=["bottom", "top"])
        method = st.selectbox("Corruption method", ["reinit", "noise", "zero", "bitflip", "shuffle"])
    with c2:
        lrs = st.multiselect("Learning rates", ["1e-5", "2e-5", "5e-5", "1e-4"], default=["5e-5"],
                             accept_new_options=True)
        seeds = st.multiselect("Seeds", [0, 1, 2, 3, 4], default=[0])
        pooling = st.multiselect("Pooling", ["cls", "mean"], default=["cls"])
        modes = st.multiselect("Mode", ["full", "linear_probe", "lora"], default=["full"])
        epochs = st.number_input("Epochs", 1, 100, 3)
        max_train = st.number_input("Max train rows (0 = all)", 0, 10_000_000, 1000, step=500)
        max_test = st.number_input("Max test rows (0 = all)", 0, 10_000_000, 500, step=500)
    # the default is fixed once per session: a default that changed every second would make Streamlit see a
    # new widget on each rerun and throw away what the user typed
    st.session_state.setdefault("grid_name", time.strftime("grid-%Y%m%d-%H%M%S"))
    name = st.text_input("Grid name", key="grid_name")
    corruption = {"sides": sides, "levels": levels}
    if method != "reinit":
        corruption["method"] = method
    return {"name": name, "models": models, "datasets": datasets, "corruption": corruption,
            "lrs": [float(x) for x in lrs] if all(_is_float(x) for x in lrs) else lrs, "seeds": seeds,
            "pooling": pooling, "modes": modes,
            "base": {"epochs": int(epochs), "max_train": int(max_train), "max_test": int(max_test)}}


def _is_float(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def plan_summary(spec: dict, root: str) -> dict | None:
    """Run count, what is done, and the cost estimate; a bad spec is explained, not raised."""
    try:
        check_spec_paths(spec)
        confine(root, "run store")
        grid = grids.expand(spec)
        store = RunStore(root)
        parts = grids.plan(grid, store)
        with st.spinner("Checking models and data..."):
            grids.preflight(grids.Grid(grid.name, parts["todo"]))
        cost, how = grids.estimate_seconds(parts["todo"], store)
    except HealcoreError as err:
        st.error(f"This grid cannot run: {err}")
        return None
    c = st.columns(4)
    c[0].metric("Runs", len(grid.configs))
    c[1].metric("Already finished", len(parts["completed"]))
    c[2].metric("To run", len(parts["todo"]))
    c[3].metric("Estimated run time", grids._fmt_duration(cost))
    st.caption(f"Estimate {how}. " + " ".join(grid.notes))
    return {"grid": grid, "todo": len(parts["todo"])}


@st.fragment(run_every=2.0)
def watch(root: str) -> None:
    """Live progress of every grid on this store, refreshed every 2 s without rerunning the page."""
    records = grids.grid_records(root)
    if not records:
        st.caption("No grid has been started on this store yet.")
        return
    store = RunStore(root)
    for rec in records[:5]:
        ids = rec.get("run_ids", [])
        states = {}
        rows = []
        for run_id in ids:
            st_ = store.status(run_id) if (store.root / run_id).is_dir() else {"effective_state": "queued"}
            state = st_.get("effective_state", "queued")
            states[state] = states.get(state, 0) + 1
            if state in ("running", "failed", "interrupted") or (state == "completed" and len(ids) <= 20):
                prog = st_.get("progress") or {}
                epochs = epoch_rows(store.root / run_id / "metrics.jsonl") if state != "queued" else []
                rows.append({"run": run_id, "state": state, "epoch": prog.get("epoch"), "loss": prog.get("loss"),
                             "test F1 so far": max((r["test"]["f1_weighted"] for r in epochs), default=None),
                             "error": st_.get("error")})
        done, failed = states.get("completed", 0), states.get("failed", 0)
        head = f"**{rec['name']}** — {'running' if rec['alive'] else rec.get('state', '?')}: " \
               f"{done} done, {states.get('running', 0)} running, {failed} failed, " \
               f"{len(ids) - done - failed - states.get('running', 0)} remaining"
        st.markdown(head)
        st.progress(done / max(1, len(ids)))
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if rec["alive"] and st.button("Cancel", key=f"cancel-{rec['name']}"):
            import argparse

            grids.cancel_command(argparse.Namespace(store=root, grid=rec["name"], run_ids=[]))
            st.toast(f"Stop requested for {rec['name']}; its runs become interrupted and resumable.")


def main() -> None:
    st.title("Launch")
    root, _ = common.load()
    choice = st.radio("Start from", ["Preset", "Build a grid"], horizontal=True)
    if choice == "Preset":
        names = grids.preset_names()
        preset = st.selectbox("Preset", names, index=names.index("demo") if "demo" in names else 0)
        spec = grids.load_spec(preset)
        st.caption(spec.get("description", "") or f"presets/{preset}.yaml")
        base = dict(spec.get("base") or {})
        with st.expander("Adjust (epochs and data caps for every run)"):
            c = st.columns(3)
            base["epochs"] = int(c[0].number_input("Epochs", 1, 100, int(base.get("epochs", 3)), key="p-epochs"))
            base["max_train"] = int(c[1].number_input("Max train rows (0 = all)", 0, 10_000_000,
                                                      int(base.get("max_train", 0)), step=100, key="p-train"))
            base["max_test"] = int(c[2].number_input("Max test rows (0 = all)", 0, 10_000_000,
                                                     int(base.get("max_test", 0)), step=100, key="p-test"))
        spec = {**spec, "base": base}
        with st.expander("Spec"):
            st.json(spec)
    else:
        spec = grid_builder()
    c = st.columns(2)
    workers = c[0].number_input("Runs at a time", 1, 64, 1, help="Local worker processes (CPU cores are shared)")
    runs_per_gpu = c[1].number_input("Runs per GPU", 1, 32, 1,
                                     help="With GPUs: runs sharing each card (small models: 8-12 on an H100); "
                                          "replaces 'Runs at a time'. Ignored on a machine without GPUs.")
    summary = plan_summary(spec, root)
    if summary and st.button("Start", type="primary", disabled=summary["todo"] == 0):
        try:
            started = grids.launch(spec, root, workers=int(workers), runs_per_gpu=int(runs_per_gpu))
            st.success(f"Started grid {started['name']} ({started['runs']} runs) as process {started['pid']}; "
                       f"log: {started['log']}")
        except HealcoreError as err:
            st.error(str(err))
    st.subheader("Progress")
    watch(root)


main()
