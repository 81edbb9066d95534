"""Launch: pick a preset or build a grid, see its size and cost, start it as a background process (here or on a
Ray cluster), and watch every grid on the store live: elapsed time, ETA, epoch and step of each running run."""
import json
import time

import pandas as pd
import streamlit as st
import yaml

from dashboard import common
from healcore import grid as grids
from healcore.config import COMPILE_MODES, LR_SCHEDULES
from healcore.data import REGISTRY
from healcore.errors import HealcoreError
from healcore.launch import cancel, grid_error, launch
from healcore.paths import check_spec_paths, confine
from healcore.plan import estimate_seconds, fmt_duration, plan, preflight
from healcore.progress import fmt_seconds, grid_progress, run_progress
from healcore.store import RunStore, grid_records, live_grid

MODELS = ["minilm-l6", "minilm-l3", "bert-base-uncased", "bert-large-uncased", "distilbert-base-uncased",
          "roberta-base"]


def grid_builder() -> dict:
    """Widgets -> a plain grid-spec dict (the same format as presets/*.yaml)."""
    c1, c2, c3 = st.columns(3)
    with c1:
        models = st.multiselect("Models", MODELS, default=["minilm-l6"], accept_new_options=True,
                                help="Short name, hub id, or a local folder")
        datasets = st.multiselect("Datasets", list(REGISTRY), default=["sst2"], accept_new_options=True,
                                  help="Registry names, or a folder with train/test files")
        levels = st.multiselect("Corruption levels (% of layers, or type a layer count)",
                                ["0%", "25%", "50%", "75%", "100%"], default=["0%", "50%", "100%"],
                                accept_new_options=True)
        sides = st.multiselect("Sides", ["bottom", "top"], default=["bottom", "top"])
    with c2:
        method = st.selectbox("Corruption method", ["reinit", "noise", "zero", "bitflip", "shuffle"])
        lrs = st.multiselect("Learning rates", ["1e-5", "2e-5", "5e-5", "1e-4"], default=["5e-5"],
                             accept_new_options=True)
        schedule = st.selectbox("Learning-rate schedule", LR_SCHEDULES,
                                help="constant: the paper's Adam at a fixed rate; linear: decay to 0 (run_glue's)")
        seeds = st.multiselect("Seeds", [0, 1, 2, 3, 4], default=[0])
        pooling = st.multiselect("Pooling", ["cls", "mean"], default=["cls"])
    with c3:
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
            "base": {"epochs": int(epochs), "max_train": int(max_train), "max_test": int(max_test),
                     "lr_schedule": schedule}}


def preset_spec() -> dict:
    names = grids.preset_names()
    preset = common.url_selectbox("Preset", names, key="preset", default="demo")
    spec = grids.load_spec(preset)
    st.caption(grids.describe(spec) + f" · presets/{preset}.yaml")
    base = dict(spec.get("base") or {})
    with st.expander("Adjust (epochs, data caps and schedule for every run)"):
        c = st.columns(4)
        base["epochs"] = int(c[0].number_input("Epochs", 1, 100, int(base.get("epochs", 3)), key="p-epochs"))
        base["max_train"] = int(c[1].number_input("Max train rows (0 = all)", 0, 10_000_000,
                                                  int(base.get("max_train", 0)), step=100, key="p-train"))
        base["max_test"] = int(c[2].number_input("Max test rows (0 = all)", 0, 10_000_000,
                                                 int(base.get("max_test", 0)), step=100, key="p-test"))
        current = base.get("lr_schedule", "constant")
        base["lr_schedule"] = c[3].selectbox("Learning-rate schedule", LR_SCHEDULES,
                                             index=LR_SCHEDULES.index(current), key="p-schedule")
    spec = {**spec, "base": base}
    with st.expander("Spec (YAML)"):
        st.code(yaml.safe_dump(spec, sort_keys=False), language="yaml")
    return spec


def _is_float(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


@st.cache_data(show_spinner="Checking models and data...", max_entries=32)
def checked_plan(spec_json: str, root: str, version: tuple) -> dict:
    """The plan of a spec against the store, its problem included: the same spec and store state are checked
    once (an offline hub lookup can take half a minute)."""
    spec = json.loads(spec_json)
    try:
        check_spec_paths(spec)
        confine(root, "run store")
        grid = grids.expand(spec)
        parts = plan(grid, RunStore(root))
    except HealcoreError as err:
        return {"error": str(err)}
    out = {"name": grid.name, "runs": len(grid.configs), "completed": len(parts["completed"]),
           "todo": len(parts["todo"]), "notes": grid.notes}
    try:
        preflight(grids.Grid(grid.name, parts["todo"]))
        out["cost"], out["how"], out["prior"] = estimate_seconds(parts["todo"], RunStore(root))
    except HealcoreError as err:
        out["problem"] = str(err)
    return out


def plan_summary(spec: dict, root: str) -> dict | None:
    """Run count, what is done, and the cost estimate; a problem is explained next to them, not raised."""
    p = checked_plan(json.dumps(spec, sort_keys=True, default=str), root, common.store_version(root))
    if "error" in p:
        st.error(f"This grid cannot run: {p['error']}")
        return None
    c = st.columns(4)
    c[0].metric("Runs", p["runs"])
    c[1].metric("Already finished", p["completed"])
    c[2].metric("To run", p["todo"])
    if "problem" in p:
        c[3].metric("Estimated run time", "–")
        st.error(f"This grid cannot run: {p['problem']}")
    else:
        c[3].metric("Estimated run time" + (" (prior)" if p["prior"] else ""), fmt_duration(p["cost"]))
        st.caption(f"Estimate {p['how']}. " + " ".join(p["notes"]))
    return {"todo": p["todo"], "ok": "problem" not in p}


def executor_choice() -> tuple[str, str | None, int, int]:
    c = st.columns(4)
    where = c[0].radio("Run on", ["this machine", "a Ray cluster"], horizontal=True, key="executor")
    address = None
    if where == "a Ray cluster":
        address = c[1].text_input("Ray address", "auto", help="auto (this node belongs to the cluster), "
                                  "ray://head:10001, or head:6379; the run store must be on storage every node "
                                  "mounts at the same path").strip() or "auto"
    workers = c[2].number_input("Runs at a time", 1, 64, 1, help="Local worker processes (CPU cores are shared)")
    runs_per_gpu = c[3].number_input("Runs per GPU", 1, 32, 1,
                                     help="With GPUs: runs sharing each card (small models: 8-12 on an H100); "
                                          "replaces 'Runs at a time'. Under Ray: a fractional GPU request.")
    return ("ray" if address else "local"), address, int(workers), int(runs_per_gpu)


@st.fragment(run_every=2.0)
def watch(root: str) -> None:
    """Live progress of every grid on this store, refreshed every 2 s without rerunning the page."""
    store = RunStore(root)
    records = grid_records(store)
    if not records:
        st.caption("No grid has been started on this store yet.")
        return
    runs = common.runs_table(root, common.store_version(root))
    for rec in records[:5]:
        g = grid_progress(rec, runs)
        where = f" on Ray at {rec.get('address')}" if rec.get("executor") == "ray" else ""
        st.markdown(f"**{g['name']}**{where} — {'running' if g['alive'] else rec.get('state', '?')}: "
                    f"{g['completed']} done, {g['running']} running, {g['queued']} queued, {g['failed']} failed · "
                    f"elapsed {fmt_seconds(g['elapsed_s'])} · ETA {fmt_seconds(g['eta_s']) if g['alive'] else '–'}")
        st.progress(g["share"])
        error = grid_error(store, g["name"]) if rec.get("state") in ("failed", "starting") and not g["alive"] else None
        if error:
            st.error(f"The grid stopped before running: {error}")
        mine = runs[runs["run_id"].isin(rec.get("run_ids", []))] if len(runs) else runs
        active = mine[mine["state"].isin(["running", "failed", "interrupted"])] if len(mine) else mine
        if len(active):
            rows = []
            for r in active.to_dict("records"):
                p = run_progress(r)
                rows.append({"run": r["run_id"], "state": r["state"], "epoch": f"{p['epoch']}/{p['epochs']}",
                             "step": f"{p['step']}/{p['steps']}" if p["steps"] else "–",
                             "loss": (r["progress"] or {}).get("loss"), "elapsed": fmt_seconds(p["elapsed_s"]),
                             "ETA": fmt_seconds(p["eta_s"]), "error": r.get("error")})
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                         column_config={"error": st.column_config.TextColumn(width="large")})
        if g["alive"] and st.button("Cancel", key=f"cancel-{g['name']}"):
            done = cancel(store, grid=g["name"])
            st.toast(f"Stop requested for {g['name']} ({done.requested} run(s) and grid); its runs become "
                     f"interrupted and resumable.")


def speed_choice(executor: str) -> tuple[int, str]:
    """Fused runs and compiled steps (off by default: measured on CPUs only so far, where neither pays)."""
    with st.expander("Speed-ups (experimental: fused runs, compiled training steps)"):
        c = st.columns(2)
        fuse = c[0].number_input(
            "Fuse up to K runs (0 = off)", 0, 27, 0, disabled=executor == "ray",
            help="Runs that differ only in corruption and learning rate (full fine-tuning) train as one model, on "
                 "this machine. Each keeps its own run folder. On a 2-core CPU fused grids ran at 0.61-0.84x the "
                 "unfused rate.")
        compile_mode = c[1].selectbox(
            "Compile the training step", COMPILE_MODES,
            help="torch.compile of each step; reduce-overhead adds CUDA graphs on a GPU. Metrics are the eager "
                 "run's. On a 2-core CPU the compiled step ran at 0.67x and compiling took 1-2 minutes per grid.")
    return int(fuse), compile_mode


def main() -> None:
    common.set_up_page("Launch")
    root, _ = common.load()
    choice = st.radio("Start from", ["Preset", "Build a grid"], horizontal=True)
    spec = preset_spec() if choice == "Preset" else grid_builder()
    executor, address, workers, runs_per_gpu = executor_choice()
    fuse, compile_mode = speed_choice(executor)
    if compile_mode != "off":
        spec = {**spec, "base": {**(spec.get("base") or {}), "compile": compile_mode}}
    summary = plan_summary(spec, root)
    running = live_grid(RunStore(root), str(spec.get("name", ""))) if summary else None
    if running:
        st.info(f"Grid {spec['name']} is running (pid {running.get('pid')}); Start is off until it ends. Follow it "
                f"or cancel it under Progress.")
    if summary and summary["ok"] and st.button("Start", type="primary", disabled=summary["todo"] == 0 or bool(running)):
        try:
            started = launch(spec, root, workers=workers, runs_per_gpu=runs_per_gpu, executor=executor,
                             address=address, fuse=0 if executor == "ray" else fuse)
            st.success(f"Started grid {started['name']} ({started['runs']} runs) as process {started['pid']}; "
                       f"log: {started['log']}")
        except HealcoreError as err:
            st.error(str(err))
    st.subheader("Progress")
    watch(root)


main()
