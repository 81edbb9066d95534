"""Launch: pick a preset or build a grid, see its size and cost, start it as a background process (here or on a
Ray cluster), and watch every grid on the store live: elapsed time, ETA, epoch and step of each running run."""
import json
import time

import pandas as pd
import streamlit as st
import yaml

from dashboard import common
from healcore.core.config import (COMPILE_MODES, DATA_OPTION_FIELDS, LR_SCHEDULES, METHODS, MODES, POOLINGS,
                                  TRAIN_LAYERS, field_help)
from healcore.core.data import REGISTRY
from healcore.core.errors import HealcoreError
from healcore.core.inspection import format_inspection, inspect_model
from healcore.core.model_facts import DERIVED, SHORT_NAMES
from healcore.core.paths import check_spec_paths, confine
from healcore.grids import spec as grids
from healcore.grids.execution import Execution, gpu_count
from healcore.core.fusion import MAX_MEMBERS
from healcore.grids.launch import cancel, grid_error, launch
from healcore.grids.plan import GridPlan, make_plan
from healcore.grids.progress import fmt_duration, grid_progress, run_progress
from healcore.store.grids import grid_records, live_grid
from healcore.store.runs import RunStore

# the short names (offline), then the paper's hub models and RoBERTa, then the decoders of the decoders-sst2 preset
MODELS = [*SHORT_NAMES, *DERIVED, "bert-base-uncased", "bert-large-uncased", "distilbert-base-uncased", "roberta-base",
          "gpt2", "EleutherAI/pythia-160m", "Qwen/Qwen2.5-0.5B"]


@st.cache_data(show_spinner=False, max_entries=64)
def model_card(name: str) -> str:
    """`healcore models inspect NAME`'s text, or why the model cannot be read (config.json alone: no weights)."""
    try:
        return format_inspection(inspect_model(name))
    except HealcoreError as err:
        return f"cannot inspect {name}: {err}"


def model_cards(models: list[str]) -> None:
    """Beside the picker: what healcore would do to each chosen model (family, levels, scopes, heads, LoRA,
    pooling)."""
    for name in models:
        with st.expander(f"Model {name}: family, levels, scopes, heads, pooling"):
            st.code(model_card(name), language=None, wrap_lines=True)


def grid_builder() -> dict:
    """Widgets -> a plain grid-spec dict (the same format as healcore/presets/*.yaml)."""
    c1, c2, c3 = st.columns(3)
    with c1:
        models = st.multiselect("Models", MODELS, default=["minilm-l6"], accept_new_options=True,
                                help="Short name, hub id, or a local folder")
        datasets = st.multiselect("Datasets", list(REGISTRY), default=["sst2"], accept_new_options=True,
                                  help="Registry names; or type a folder (train/test files, or one saved with "
                                       "DatasetDict.save_to_disk), or hub:<id>[:<config>], e.g. "
                                       "hub:tweet_eval:sentiment (its columns and splits below)")
        levels = st.multiselect("Corruption levels (% of layers, or type a layer count)",
                                ["0%", "25%", "50%", "75%", "100%"], default=["0%", "50%", "100%"],
                                accept_new_options=True)
        sides = st.multiselect("Sides", ["bottom", "top"], default=["bottom", "top"])
    with c2:
        method = st.selectbox("Corruption method", METHODS)
        heads = st.text_input("Attention heads damaged", "all", help=field_help()["heads"] + "; reinit, noise, "
                              "zero and magnitude only").strip()
        lrs = st.multiselect("Learning rates", ["1e-5", "2e-5", "5e-5", "1e-4"], default=["5e-5"],
                             accept_new_options=True)
        schedule = st.selectbox("Learning-rate schedule", LR_SCHEDULES,
                                help="constant: the paper's Adam at a fixed rate; linear: decay to 0 (run_glue's)")
        seeds = st.multiselect("Seeds", [0, 1, 2, 3, 4], default=[0])
        pooling = st.multiselect("Pooling", POOLINGS, default=[], placeholder="each model's own",
                                 help="Empty: each model's default, cls for encoders and last (the last real token) "
                                      "for decoders, which refuse cls")
    with c3:
        modes = st.multiselect("Mode", MODES, default=["full"])
        heal = st.multiselect("Which parameters heal", TRAIN_LAYERS, default=["all"],
                              help=field_help()["train_layers"] + " (full fine-tuning; several: one axis each)")
        layer_decay = st.number_input("Layer-wise lr decay (1 = off)", 0.01, 1.0, 1.0, step=0.05,
                                      help=field_help()["lr_layer_decay"])
        epochs = st.number_input("Epochs", 1, 100, 3)
        max_train = st.number_input("Max train rows (0 = all)", 0, 10_000_000, 1000, step=500)
        max_test = st.number_input("Max test rows (0 = all)", 0, 10_000_000, 500, step=500)
        # the default is fixed once per session: a default that changed every second would make Streamlit see a
        # new widget on each rerun and throw away what the user typed
        st.session_state.setdefault("grid_name", time.strftime("grid-%Y%m%d-%H%M%S"))
        name = st.text_input("Grid name", key="grid_name")
    model_cards(models)
    corruption = {"sides": sides, "levels": levels}
    if method != "reinit":
        corruption["method"] = method
    if heads and heads.lower() != "all":
        corruption["heads"] = heads
    return {"name": name, "models": models, "datasets": datasets, "corruption": corruption,
            "lrs": [float(x) for x in lrs] if all(_is_float(x) for x in lrs) else lrs, "seeds": seeds,
            **({"pooling": pooling} if pooling else {}), "modes": modes,
            **({"axes": {"train_layers": heal}} if heal and heal != ["all"] else {}),
            "base": {**artefact_defaults(), "epochs": int(epochs), "max_train": int(max_train),
                     "max_test": int(max_test), "lr_schedule": schedule, **data_options(),
                     **({"lr_layer_decay": float(layer_decay)} if layer_decay != 1.0 else {})}}


# what the demo keeps beside its metrics (features for t-SNE, probe rows): a grid built here with the demo's
# settings is the demo (the same runs, already finished), not a second set of runs differing in these alone
def artefact_defaults() -> dict:
    """The demo preset's feature and probe sample sizes (none where no demo preset is found)."""
    try:
        base = grids.load_spec("demo").get("base") or {}
    except HealcoreError:
        return {}
    return {k: v for k, v in base.items() if k in ("feature_samples", "probe_samples")}

DATA_OPTIONS = dict(zip(DATA_OPTION_FIELDS, ("Text column", "Second text column", "Label column", "Train split",
                                             "Test split")))  # config.DATA_OPTION_FIELDS, labelled


def data_options() -> dict:
    """The dataset's columns and splits, for data whose names are not the usual ones (blank: found by name and
    reported in each run's log)."""
    helps = field_help()
    out = {}
    with st.expander("Columns and splits of your own data (blank: found by their usual names)"):
        c = st.columns(len(DATA_OPTIONS))
        for i, (name, label) in enumerate(DATA_OPTIONS.items()):
            value = c[i].text_input(label, key=f"data-{name}", help=helps[name]).strip()
            if value:
                out[name] = value
        # on a line of its own: in a sixth column at 1280 px its label was cut to "Allow clas..."
        if st.checkbox("Allow classes missing from training", key="data-allow-missing",
                       help=helps["allow_missing_classes"]):
            out["allow_missing_classes"] = True
    return out


def preset_spec() -> dict:
    names = grids.preset_names()
    preset = common.url_selectbox("Preset", names, key="preset", default="demo")
    spec = grids.load_spec(preset)
    st.caption(grids.describe(spec) + f" · healcore/presets/{preset}.yaml")
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
def checked_plan(spec_json: str, root: str, execution: Execution, version: tuple) -> GridPlan | str:
    """The plan of a spec against the store (make_plan: a problem with a model or the data comes inside it), or why
    the spec cannot be planned at all; planned once per spec, store state and execution (an offline hub lookup
    can take half a minute), and the same plan is what Start launches."""
    spec = json.loads(spec_json)
    try:
        check_spec_paths(spec)
        confine(root, "run store")
        return make_plan(spec, RunStore(root), execution=execution)
    except HealcoreError as err:
        return str(err)


def plan_summary(plan: GridPlan | str) -> None:
    """Run count, what is done, and the cost estimate; a problem is explained next to them, not raised."""
    if isinstance(plan, str):
        st.error(f"This grid cannot run: {plan}")
        return
    counts = plan.counts()
    c = st.columns(4)
    c[0].metric("Runs", counts["runs"])
    c[1].metric("Already finished", counts["completed"])
    c[2].metric("To run", counts["todo"])
    if plan.problem is not None:
        c[3].metric("Estimated run time", "–")
        st.error(f"This grid cannot run: {plan.problem}")
    else:
        c[3].metric("Estimated run time" + (" (prior)" if plan.prior else ""), fmt_duration(plan.cost_s, "unknown"))
        st.caption(f"Estimate {plan.cost_note}; about {fmt_duration(plan.wall_s, 'unknown')} of wall time with "
                   f"{plan.slots} run(s) at a time.")
    if plan.grid.notes:  # levels some models of the grid cannot take (another model does): said, not hidden
        st.info("Not run: " + "; ".join(plan.grid.notes) + ".")


def execution_choice() -> Execution | str:
    """Where and how the grid runs, as the library's Execution (its rules checked there), or why it cannot."""
    c = st.columns(4)
    where = c[0].radio("Run on", ["this machine", "a Ray cluster"], horizontal=True, key="executor")
    address = None
    if where == "a Ray cluster":
        address = c[1].text_input("Ray address", "auto", help="auto (this node belongs to the cluster), "
                                  "ray://head:10001, or head:6379; the run store must be on storage every node "
                                  "mounts at the same path").strip() or "auto"
    workers = c[2].number_input("Runs at a time", 1, 64, 1, help="Local worker processes (CPU cores are shared)")
    runs_per_gpu = 1
    if address or gpu_count():  # offered where there is a GPU to share (here, or on the cluster)
        runs_per_gpu = c[3].number_input("Runs per GPU", 1, 32, 1,
                                         help="With GPUs: runs sharing each card (small models: 8-12 on an H100); "
                                              "replaces 'Runs at a time'. Under Ray: a fractional GPU request.")
    fuse = speed_choice(address is not None)
    try:
        return Execution(executor="ray" if address else "local", address=address, workers=int(workers),
                         runs_per_gpu=int(runs_per_gpu), fuse=0 if address else fuse)
    except HealcoreError as err:
        return str(err)


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
        if rec.get("damaged"):
            st.warning(f"**{rec['name']}**: {rec['damaged']}")
            continue
        g = grid_progress(rec, runs)
        where = f" on Ray at {rec.get('address')}" if rec.get("executor") == "ray" else ""
        st.markdown(f"**{g['name']}**{where} — {'running' if g['alive'] else rec.get('state', '?')}: "
                    f"{g['completed']} done, {g['running']} running, {g['queued']} queued, {g['failed']} failed · "
                    f"elapsed {fmt_duration(g['elapsed_s'])} · ETA {fmt_duration(g['eta_s']) if g['alive'] else '–'}")
        st.progress(g["share"])
        check = rec.get("estimate_check")
        if isinstance(check, dict) and not g["alive"]:
            st.caption(f"Took {fmt_duration(check.get('took_s'))} of wall time; estimated "
                       f"{fmt_duration(check.get('estimated_s'))} before Start ({check.get('ratio')}x).")
        error = grid_error(store, g["name"]) if rec.get("state") in ("failed", "starting") and not g["alive"] else None
        if error:
            st.error(f"The grid stopped before running: {error}")
        mine = runs[runs["run_id"].isin(rec.get("run_ids", []))] if len(runs) else runs
        active = mine[mine["state"].isin(["running", "failed", "interrupted"])] if len(mine) else mine
        if len(active):
            rows = []
            for r in active.to_dict("records"):
                p = run_progress(r)
                loss = (r["progress"] or {}).get("loss") if isinstance(r["progress"], dict) else None
                rows.append({"run": r["run_id"],
                             "state": "starting (loading the model, tokenising)" if p["starting"] else r["state"],
                             "epoch": "–" if p["starting"] else f"{p['epoch']}/{p['epochs']}",
                             "step": f"{p['step']}/{p['steps']}" if p["steps"] else "–",
                             "loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "–",
                             "elapsed": fmt_duration(p["elapsed_s"]), "ETA": fmt_duration(p["eta_s"]),
                             "error": r.get("error") or ""})
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                         column_config={"error": st.column_config.TextColumn(width="large")})
        if g["alive"] and st.button("Cancel", key=f"cancel-{g['name']}"):
            done = cancel(store, grid=g["name"])
            st.toast(f"Stop requested for {g['name']} ({done.requested} run(s) and grid); its runs become "
                     f"interrupted and resumable.")


def speed_choice(on_ray: bool) -> int:
    """Fused runs (off by default: measured on CPUs only so far, where it does not pay); compiling the training step
    is a run setting (compile_choice)."""
    with st.expander("Speed-ups (experimental: fused runs, compiled training steps)"):
        c = st.columns(2)
        fuse = c[0].number_input(
            "Fuse up to K runs (0 = off)", 0, MAX_MEMBERS, 0, disabled=on_ray,
            help="Runs that differ only in corruption and learning rate (full fine-tuning) train as one model, on "
                 "this machine. Each keeps its own run folder. On a 2-core CPU fused grids ran at 0.61-0.84x the "
                 "unfused rate.")
        c[1].selectbox(
            "Compile the training step", COMPILE_MODES, key="compile",
            help="torch.compile of each step; reduce-overhead adds CUDA graphs on a GPU. Metrics are the eager "
                 "run's. On a 2-core CPU the compiled step ran at 0.67x and compiling took 1-2 minutes per grid.")
    return int(fuse)


def main() -> None:
    common.set_up_page("Launch")
    root, _ = common.load()
    choice = st.radio("Start from", ["Preset", "Build a grid"], horizontal=True)
    spec = preset_spec() if choice == "Preset" else grid_builder()
    execution = execution_choice()
    compile_mode = st.session_state.get("compile", "off")
    if compile_mode != "off":
        spec = {**spec, "base": {**(spec.get("base") or {}), "compile": compile_mode}}
    if isinstance(execution, str):
        st.error(f"This grid cannot run: {execution}")
        plan = None
    else:
        plan = checked_plan(json.dumps(spec, sort_keys=True, default=str), root, execution, common.store_version(root))
        plan_summary(plan)
    ready = isinstance(plan, GridPlan) and plan.problem is None
    running = live_grid(RunStore(root), plan.grid.name) if ready else None
    if running:
        st.info(f"Grid {plan.grid.name} is running (pid {running.get('pid')}); Start is off until it ends. Follow it "
                f"or cancel it under Progress.")
    if "started" in st.session_state:  # said once, on the rerun that follows a Start
        st.success(st.session_state.pop("started"))
    if ready and st.button("Start", type="primary", disabled=not plan.todo or bool(running)):
        try:
            started = launch(plan, root)
        except HealcoreError as err:
            st.error(str(err))
        else:
            # rerun at once: the block above then counts the launched runs, and Start is off while the grid runs
            st.session_state["started"] = (f"Started grid {started['name']} ({started['runs']} runs) as process "
                                           f"{started['pid']}; log: {started['log']}")
            st.rerun()
    st.subheader("Progress")
    watch(root)


if __name__ == "__main__":  # Streamlit runs a page as __main__; tests import its helpers
    main()
