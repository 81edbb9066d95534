"""healcore's command line: run, grid, status, cancel, report, compare, data, models (and the internal exec and
worker).

Every user mistake prints one line, `healcore: error: ...`, and exits 2; a traceback means a bug.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from healcore.core.config import DATA_OPTION_FIELDS, RunConfig, field_help
from healcore.core.errors import ConfigError, HealcoreError, RunBusyError, shown
from healcore.core.model_facts import with_model_defaults
from healcore.store.runs import RunStore

DEFAULT_STORE = os.environ.get("HEALCORE_RUNS", "runs")

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every other user mistake
        self.exit(2, f"healcore: error: {message}\n")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field; its help is the field's comment in config.py, with the default."""
    helps, defaults = field_help(), RunConfig().to_dict()
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        text = helps[f.name].replace("%", "%%")  # argparse %-formats help strings
        if str(f.type) == "bool":
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=text)
        else:
            p.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                           help=f"{text} [{defaults[f.name]}]")


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
              if getattr(args, f.name, None) is not None}
    return RunConfig.from_dict(with_model_defaults(values))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="healcore", description="Corrupt layers of a pretrained transformer, fine-tune it, and "
                     "measure how much it heals. Runs are stored one folder each under --store.")
    parser.add_argument("--store", default=DEFAULT_STORE, help="run store folder [$HEALCORE_RUNS or ./runs]")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{run,grid,status,cancel,report,compare,data,models}")
    for add in (_run_args, _grid_args, _status_args, _report_args, _compare_args, _data_args, _models_args):
        add(sub)
    return parser


def _run_args(sub) -> None:
    """`healcore run`, and the internal `exec` and `worker`."""
    p = sub.add_parser("run", help="execute one run (reused if finished, resumed if interrupted)",
                       description="Execute one healing run. Example: healcore run --model minilm-l6 "
                       "--dataset ag_news --corrupt bottom:50% --lr 2e-5 --epochs 3")
    _add_config_args(p)
    p.add_argument("--config", help="JSON file with config keys (flags override it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("exec")  # internal, unlisted: run a config file in this process
    p.add_argument("config_file")
    sub.add_parser("worker")  # internal, unlisted: a persistent grid worker (worker.py), jobs on stdin


def _grid_args(sub) -> None:
    """`healcore grid`."""
    g = sub.add_parser("grid", help="run a grid spec or preset (finished runs are skipped)",
                       description="Expand a grid spec (YAML) or preset name into runs and execute them.")
    g.add_argument("spec", help="preset name (healcore/presets/) or a YAML grid file")
    g.add_argument("--dry-run", action="store_true", help="print the plan and cost estimate; run nothing")
    g.add_argument("--workers", type=int, default=1,
                   help="runs at a time on this machine, each with cores//N threads unless OMP_NUM_THREADS is set [1]")
    g.add_argument("--runs-per-gpu", type=int, default=1, help="runs sharing one GPU (local executor) [1]")
    g.add_argument("--executor", choices=("local", "ray"), default="local", help="local processes or Ray [local]")
    g.add_argument("--address", default=None, help="Ray cluster address (auto, ray://host:10001); none = local Ray")
    g.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    g.add_argument("--process-per-run", action="store_true",
                   help="start a fresh process for every run instead of reusing worker processes")
    g.add_argument("--fuse", type=int, default=0, metavar="K",
                   help="train up to K runs that differ only in corruption and learning rate as one fused model "
                        "(full fine-tuning, local executor; fewer where the device's free memory holds fewer; "
                        "experimental) [0 = off]")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config key for every run, e.g. --set epochs=1")
    # internal: the process a Start spawned takes the plan it launched from the grid's record (plan.launched_plan)
    g.add_argument("--launched", action="store_true", help=argparse.SUPPRESS)


def _status_args(sub) -> None:
    """`healcore status` and `healcore cancel`."""
    s = sub.add_parser("status", help="summarise the store: runs by state, grids, failures")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser("cancel", help="stop running runs cleanly (they become interrupted and resumable)")
    c.add_argument("run_ids", nargs="*", help="run ids; none = every running run in the store")
    c.add_argument("--grid", help="cancel this grid's process and its runs")


def _report_args(sub) -> None:
    """`healcore report`."""
    r = sub.add_parser("report", help="write a Markdown study report with PNG figures from the store",
                       description="Tables, claims, flags and figures of every completed run in --store.")
    r.add_argument("--out", default="reports", help="folder for the .md file and figures/ [reports]")
    r.add_argument("--title", default="Reproduction study")
    r.add_argument("--name", default="report",
                   help="a file name, the stem of <NAME>.md and figures/<name>-*.png [report: REPORT.md]")
    r.add_argument("--force", action="store_true",
                   help="replace a report this command did not write from this store (by default it is refused)")
    r.add_argument("--command", dest="command_line", default="",
                   help="commands that regenerate the report, '; '-separated, printed as a code block")
    r.add_argument("--note", default="", help="a paragraph placed under the title (scope, caveats)")


def _compare_args(sub) -> None:
    """`healcore compare`."""
    k = sub.add_parser("compare", help="compare two conditions cell by cell (A / B / A - B, with significance)",
                       description="Two conditions of the store's grid cell by cell, in the paper's Table 3/4 "
                       "layout: a setting's two values (--by pooling --a cls --b mean), this store against a second "
                       "(--store2 DIR), or against the paper's published numbers (--against paper). Examples: "
                       "healcore compare --by lr_schedule; healcore compare --against paper --format latex")
    k.add_argument("--by", help="the setting to compare (one with cells measured under two of its values, everything "
                                "else equal: pooling, mode, lr_schedule, model, method, epochs...)")
    k.add_argument("--a", help="its value for A [the first]")
    k.add_argument("--b", help="its value for B [the first value that shares an experiment with A]")
    k.add_argument("--store2", help="a second run store: this store is A, it is B (matched on experiments)")
    k.add_argument("--against", choices=("paper",), help="compare with the paper's published numbers (B)")
    k.add_argument("--paper-model", help="the paper's model to set beside the store's [the store's own, else "
                                         "bert-base-uncased]")
    k.add_argument("--metric", default="f1", help="f1, f1_macro, accuracy, healing, recovery [f1]")
    k.add_argument("--correction", default="holm", choices=("holm", "bh"),
                   help="multiple-comparison correction: holm (Holm) or bh (Benjamini-Hochberg) [holm]")
    k.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only cells with this setting (repeatable), e.g. --where epochs=6")
    k.add_argument("--format", default="md", choices=("md", "csv", "latex", "tidy"),
                   help="md, csv or latex: the paper's layout (a row per experiment); tidy: one CSV row per aligned "
                        "cell, its settings as columns, then A, B, n, sd, A - B, the test, p and corrected p [md]")
    k.add_argument("--out", help="write the table to this file (atomically) instead of printing it")


def _command_group(sub, name: str, help_text: str):
    """A command with commands of its own (`healcore data export`): their subparsers, chosen in args.<name>_command."""
    return sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_command", required=True,
                                                                parser_class=_Parser)


def _data_args(sub) -> None:
    """`healcore data export | list`."""
    dsub = _command_group(sub, "data", "dataset tools")
    e = dsub.add_parser("export", help="write a dataset as train.csv.gz/test.csv.gz into DIR",
                        description="Write any dataset --dataset takes (a registry name, a folder, a saved DatasetDict, "
                        "hub:<id>[:<config>]) in healcore's folder format, e.g. for a machine without a network: "
                        "healcore data export hub:tweet_eval:sentiment data/tweet_sentiment")
    e.add_argument("name", help="registry name, folder or hub:<id>[:<config>]")
    e.add_argument("dir", help="folder to write (created when missing)")
    helps = field_help()
    for name in DATA_OPTION_FIELDS:
        e.add_argument("--" + name.replace("_", "-"), dest=name, default="", help=helps[name].replace("%", "%%"))
    dsub.add_parser("list", help="list the registry datasets and where each would load from")


def _models_args(sub) -> None:
    """`healcore models inspect | families`."""
    msub = _command_group(sub, "models", "model tools: the families healcore runs, and what it would do to a model")
    i = msub.add_parser("inspect", help="a model's family, sizes, levels, scopes, LoRA targets and pooling",
                        description="Print, from config.json alone (no weights loaded), what healcore would do to a "
                        "model: family, layers, width and parameters; which layers bottom:25%% and the other levels "
                        "pick; which modules each scope touches; the LoRA targets and the default pooling. "
                        "Example: healcore models inspect gpt2")
    i.add_argument("name", help="short name (minilm-l6), a folder saved with save_pretrained, or a hub id")
    i.add_argument("--json", action="store_true", help="print it as JSON")
    msub.add_parser("families", help="list the model families healcore knows")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except RunBusyError as err:  # another process runs this config: not a mistake, a distinct exit code
        print(f"healcore: busy: {err}", file=sys.stderr)
        return 3
    except HealcoreError as err:
        print(f"healcore: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("healcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    # Each command imports what it needs when it is chosen: `healcore status` and `--help` never load torch.
    commands = {"run": _run, "exec": _exec, "worker": _worker, "grid": _grid, "status": _status, "cancel": _cancel,
                "report": _report, "compare": _compare, "data": _data, "models": _models}
    return commands[args.command](args)


def _run(args: argparse.Namespace) -> int:
    from healcore.engine.run import execute
    from healcore.grids.plan import as_stored

    if args.config:
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        flags = {k: v for k, v in vars(args).items() if k in fields and v is not None}
        cfg = RunConfig.from_dict(with_model_defaults({**_read_json_file(args.config), **flags}))
    else:
        cfg = _config_from_args(args)
    store = RunStore(args.store)
    cfg = as_stored(cfg, store)  # bottom:50% and bottom:3 of a 6-layer model are one run
    summary = execute(cfg, store, show_progress=not args.quiet)
    best = summary["best"]["test"]
    print(f"run {cfg.run_id}: best epoch {summary['best_epoch']} (on {summary['selected_on']}), "
          f"test weighted F1 {best['f1_weighted']:.2f}, accuracy {best['accuracy']:.2f}; "
          f"probe before fine-tuning {summary['probe'].get('f1_weighted', float('nan')):.2f}")
    print(f"folder: {store.path(cfg.run_id)}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    from healcore.engine.run import execute

    execute(RunConfig.from_dict(_read_json_file(args.config_file)), RunStore(args.store))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from healcore.engine.worker import main as worker_main

    return worker_main()


def _status(args: argparse.Namespace) -> int:
    from healcore.grids.launch import status_lines, store_status

    status = store_status(RunStore(args.store))
    print(json.dumps(status) if args.json else "\n".join(status_lines(status)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from healcore.grids.launch import cancel

    print(cancel(RunStore(args.store), grid=args.grid, run_ids=args.run_ids).line())
    return 0


def _report(args: argparse.Namespace) -> int:
    from healcore.results.report import write_report

    print(f"wrote {write_report(args.store, args.out, args.title, args.name, args.command_line, args.note, args.force)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from healcore.results.compare_command import run_compare

    text = run_compare(args.store, by=args.by, a=args.a, b=args.b, store2=args.store2, against=args.against,
                       paper_model=args.paper_model, metric=args.metric, correction=args.correction,
                       where=args.where, style=args.format, out=args.out)
    print(text if not args.out else f"wrote {args.out}", end="" if not args.out else "\n")
    return 0


def _data(args: argparse.Namespace) -> int:
    from healcore.core import data

    if args.data_command == "export":
        from healcore.core.sources import DataOptions

        options = DataOptions(**{name: getattr(args, name) for name in DATA_OPTION_FIELDS})
        from healcore.core.paths import output_dir
        from healcore.store.io import atomic_write_bytes

        out = output_dir(args.dir, "export folder")  # checked before the data is loaded
        for file, content in data.export_files(args.name, options).items():
            atomic_write_bytes(out / file, content)  # each whole or not at all
        print(f"wrote {', '.join(str(p) for p in sorted(out.glob('*.csv.gz')))}")
        return 0
    root = data.data_root()
    for name, info in data.REGISTRY.items():
        local = root is not None and (root / name).is_dir()
        print(f"{name:30s} {len(info.classes):3d} classes  {'folder ' + str(root / name) if local else 'hub ' + info.hub_id}")
    print("Any other dataset: a folder of train/test files (CSV, JSONL, Parquet), a folder saved with "
          "DatasetDict.save_to_disk, or hub:<id>[:<config>]; columns by --text-column / --label-column")
    return 0


def _models(args: argparse.Namespace) -> int:
    from healcore.core.families import FAMILIES

    if args.models_command == "families":
        for fam in FAMILIES:
            kind = "decoder" if fam.causal else "encoder"
            print(f"{fam.name:26s} {kind:8s} model_type {', '.join(fam.model_types)}; pooling {fam.pooling}")
        return 0
    from healcore.core.inspection import format_inspection, inspect_model

    info = inspect_model(args.name)
    print(json.dumps(info, indent=2) if args.json else format_inspection(info))
    return 0


def _grid(args: argparse.Namespace) -> int:
    from healcore.grids.execution import Execution
    from healcore.grids.launch import run_grid
    from healcore.grids.plan import launched_plan, make_plan
    from healcore.grids.spec import load_spec

    execution = Execution(executor=args.executor, address=args.address, workers=args.workers,
                          runs_per_gpu=args.runs_per_gpu, fuse=args.fuse, process_per_run=args.process_per_run)
    store = RunStore(args.store)
    plan = launched_plan(str(load_spec(args.spec).get("name")), store, execution, args.retry_failed) \
        if args.launched else None
    if plan is None:
        plan = make_plan(args.spec, store, _parse_sets(args.set), args.retry_failed, execution, deep=True)
    else:
        print(f"grid {plan.grid.name}: the plan its Start launched (runs and estimate from its record)")
    print("\n".join(plan.lines()))
    if plan.problem is not None:
        raise plan.problem
    if args.dry_run:
        return 0
    if not plan.todo:
        print("nothing to do")
        return 0
    result = run_grid(plan, store)
    from healcore.grids.progress import fmt_duration
    from healcore.results import load_runs
    from healcore.store.io import read_json

    runs = load_runs(store.root, include_queued=False)
    flagged = int(runs[runs["run_id"].isin({c.run_id for c in plan.grid.configs})]["failed"].sum())
    print(f"grid {plan.grid.name}: {result['completed']} completed, {result['failed']} failed, "
          f"{result['busy']} skipped (running elsewhere), {result['interrupted']} interrupted; {flagged} run(s) with "
          f"convergence failures (healcore status lists them)")
    for run_id, error in result.get("errors", {}).items():
        print(f"  failed {run_id}: {error}")
    check = (read_json(store.grid_record_path(plan.grid.name), {}) or {}).get("estimate_check")
    if isinstance(check, dict):
        print(f"took {fmt_duration(check['took_s'])} of wall time; estimated {fmt_duration(check['estimated_s'])} "
              f"({check['ratio']}x; kept in the grid's record as estimate_check)")
    return 1 if result["interrupted"] else 0


def _parse_sets(pairs: list[str]) -> dict:
    """--set KEY=VALUE pairs (values parsed as YAML: 1e-5, true, [1, 2]) into base-config overrides."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} must look like KEY=VALUE, e.g. --set epochs=1")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError):  # a value YAML cannot read (unbalanced brackets, 5,000 digits)
            raise ConfigError(f"--set {key.strip()}: its value {shown(value)} cannot be read; give a number, a word, "
                              f"true/false or [a, b]") from None
    return out


def _read_json_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path} ({err.strerror})") from None
    except ValueError as err:
        raise ConfigError(f"config file {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of config keys")
    return data


if __name__ == "__main__":
    sys.exit(main())
