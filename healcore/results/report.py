"""`healcore report`: a Markdown study report, with PNG figures, generated from a run store.

Every number in it is read from the runs; the figures are the dashboard's own Altair charts saved as PNG. One
function per section; each returns its Markdown lines (and saves its figures).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from healcore import results
from healcore.core.errors import ConfigError, DiskFullError
from healcore.core.paths import file_name, output_dir
from healcore.results import analysis, charts, compare_tables, flags
from healcore.results.cell_table import table1_variant
from healcore.results.keys import describe, lr_text, side_rank
from healcore.store.io import atomic_write_bytes, human, mount_point
from healcore.store.runs import RunStore


@dataclass
class Study:
    """What every section reads: the store, its tables, and where figures go."""

    store: RunStore
    root: str
    fig_dir: Path
    prefix: str
    runs: pd.DataFrame
    done: pd.DataFrame
    table: pd.DataFrame
    reinit: pd.DataFrame  # scored, re-initialised cells with [CLS] pooling and full fine-tuning (Table 1's)
    flat: pd.DataFrame  # did each clean cell of `reinit` plateau (results.plateau)
    files: dict[Path, bytes] = field(default_factory=dict)  # figures, written with the Markdown at the end

    def figure(self, chart, name: str, alt_text: str) -> list[str]:
        path = self.fig_dir / f"{self.prefix}-{name}.png"
        self.files[path] = chart_png(chart)
        return [f"![{alt_text}](figures/{path.name})", ""]


def write_all(files: dict[Path, bytes]) -> None:
    """Every file of the report, or (on a disk without room for them all) none: the space is checked first, then
    each file is written atomically, so a failure leaves the previous report and its figures as they were."""
    import shutil

    needed = sum(len(data) for data in files.values())
    disk = mount_point(next(iter(files)).parent)
    free = shutil.disk_usage(disk).free
    if free < needed + 64 * 1024:
        raise DiskFullError(f"disk full on {disk} ({human(free)} free): the report and its figures "
                            f"need {human(needed)}; free space and run the same command again (the previous report "
                            f"is untouched)")
    for path, data in files.items():
        atomic_write_bytes(path, data)


def write_report(store_root: str | Path, out_dir: str | Path, title: str = "Reproduction study",
                 figures_prefix: str = "report", command: str = "", note: str = "", force: bool = False) -> Path:
    """The report of every completed run in the store, as <out>/<NAME>.md and <out>/figures/<name>-*.png.
    Checked before any work: a plain file name, an --out that is a folder, and no report written from elsewhere
    (another store, or by hand) replaced without `force`."""
    out = output_dir(out_dir)
    path = report_path(out, file_name(figures_prefix, "--name"))
    marker = _marker(store_root)
    if path.exists() and not force and _first_line(path) != marker:
        raise ConfigError(f"{path} exists and was not written from the store {RunStore(store_root).root} by "
                          f"healcore report; pass --force to replace it, or choose another --out or --name")
    runs = results.load_runs(store_root, include_queued=False)
    if not (runs["state"] == "completed").any():
        states = results.load_runs(store_root)["state"].value_counts()  # queued runs of live grids too
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no runs"
        raise ConfigError(f"no completed run in {RunStore(store_root).root} yet ({counts}); a report needs at least "
                          f"one (healcore status shows progress)")
    fig_dir = out / "figures"
    table = results.cells(runs)
    reinit = results.scored(results.reinit_only(table1_variant(table)))
    flat = results.plateau(reinit, results.load_epochs(store_root, results.clean_run_ids(reinit)))
    study = Study(RunStore(store_root), str(store_root), fig_dir, figures_prefix, runs,
                  runs[runs["state"] == "completed"], table, reinit, flat)
    lines = (header(study, title, note, command) + setup(study) + table1(study) + plateau(study) + curves(study)
             + healing(study) + claims(study) + flags_section(study.runs, study.table) + variants(study)
             + comparisons(study)
             + dose_response(study) + data_size(study) + tsne(study) + where_healing_happens(study) + damage_predicts(study))
    write_all({**study.files, path: (marker + "\n" + "\n".join(lines) + "\n").encode()})
    return path


def chart_png(chart) -> bytes:
    """An Altair chart as PNG bytes (vl-convert, at 1.5x for sharp figures)."""
    import io

    buf = io.BytesIO()
    chart.save(buf, format="png", scale_factor=1.5)
    return buf.getvalue()


def report_path(out: Path, name: str) -> Path:
    """<out>/<NAME>.md: `reproduction` gives REPRODUCTION.md, `report` REPORT.md."""
    return out / f"{name.upper()}.md"


def _marker(store_root: str | Path) -> str:
    """The report's first line: which store wrote it, so the same command may write it again and nothing else."""
    return f"<!-- written by healcore report from the run store {RunStore(store_root).root} -->"


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------ sections
def header(s: Study, title: str, note: str, command: str) -> list[str]:
    lines = [f"# {title}", "",
             f"Generated by `healcore report` on {time.strftime('%Y-%m-%d')} from the run store `{s.root}`: "
             f"{len(s.done)} completed runs ({len(s.runs) - len(s.done)} not completed). Every number and figure "
             f"below is computed from those runs.", ""]
    if note:
        lines += [note, ""]
    if command:
        lines += ["Regenerate everything (the runs, then this file and its figures):", "", "```bash",
                  command.replace("; ", "\n"), "```", ""]
    return lines


def setup(s: Study) -> list[str]:
    sizes, hardware, bf16 = {}, {}, set()
    for r in s.done.itertuples():
        summary = s.store.summary(r.run_id) or {}
        sizes.setdefault(r.dataset, summary.get("data", {}).get("sizes"))
        name = summary.get("hardware") or summary.get("device", "unrecorded")  # older runs lack the name
        hardware[name] = hardware.get(name, 0) + 1
        bf16.add(bool(summary.get("bf16")))
    done = s.done
    schedules = done["lr_schedule"].value_counts().sort_index() if len(done) else pd.Series(dtype=int)
    lines = ["## Set-up", "",
             f"- Models: {', '.join(sorted(done['model'].unique()))}.",
             "- Data (rows per split, from the runs): " + "; ".join(
                 f"{d}: {z['train']} train / {z['validation']} validation / {z['test']} test"
                 for d, z in sizes.items() if z) + ".",
             f"- Epochs: {sorted(done['epochs'].unique().tolist())}; learning rates tried: "
             f"{sorted(done['lr'].unique().tolist())}; seeds: {sorted(done['seed'].unique().tolist())}; "
             f"max length: {sorted(done['max_length'].unique().tolist())}.",
             "- Optimizer: " + results.optimizer_name(done) + "; learning-rate schedule: "
             + "; ".join(f"{name} ({n} runs)" for name, n in schedules.items())
             + " (constant: the paper's fixed rate; linear: decay to 0, run_glue's; runs stored before the setting "
               "existed used linear).",
             "- Hardware (from the runs): " + "; ".join(f"{name}: {n} runs" for name, n in sorted(hardware.items()))
             + "; precision: " + ("bf16 autocast (weights in fp32)" if bf16 == {True} else
                                  "fp32" if bf16 == {False} else "bf16 autocast in some runs, fp32 in others")
             + compiled_steps(done) + ".",
             "- Each cell keeps the learning rate with the best mean validation score over seeds and reports mean ± "
             "std over seeds of the test weighted F1 at the best-validation epoch. The paper's protocol (best epoch "
             "chosen on test) is reported beside it."]
    return lines + fewer_lrs(s.table) + [""]


def compiled_steps(done) -> str:
    """'; training step compiled (...)' where some runs compiled it (compile=...), else nothing."""
    counts = done["compile"].value_counts() if "compile" in done else {}
    modes = {mode: int(n) for mode, n in counts.items() if mode != "off"}
    if not modes:
        return ""
    return "; training step compiled with torch.compile: " + ", ".join(
        f"{mode} ({n} of {len(done)} runs)" for mode, n in sorted(modes.items()))


def fewer_lrs(table: pd.DataFrame) -> list[str]:
    """A set-up line naming the cells that tried fewer learning rates than other cells of their line (same
    model, data, method and schedule; a partly run grid): there "best kept" chose among fewer candidates."""
    table = results.scored(table)
    if not len(table) or "lrs_tried" not in table:
        return []
    keys = results.line_keys(table) + ["method"]
    most = table.groupby(keys, dropna=False)["lrs_tried"].transform("max")
    few = [f"{r.model} {r.dataset} {results.setting_label(r.side, r.level)} ({r.method}, {r.pooling} pooling, "
           f"{r.mode}): {r.lrs_tried} of {m}" for r, m in zip(table.itertuples(), most) if r.lrs_tried < m]
    if not few:
        return []
    return [f"- Fewer learning rates than the rest of their line in {len(few)} of {len(table)} cells: "
            + "; ".join(few) + "."]


def table1(s: Study) -> list[str]:
    if not len(s.reinit):
        return []
    caption = results.recipe_caption(s.done)
    return ["## Table 1 layout: [CLS] pooling, full fine-tuning, re-initialisation", "",
            "Best epoch on validation:", "", results.export_table1(s.reinit, "markdown", "f1", caption=caption),
            "The paper's protocol, best epoch on test (mean over seeds):", "",
            results.export_table1(s.reinit.assign(f1_std=np.nan), "markdown", "best_on_test", caption=caption), ""]


def plateau(s: Study) -> list[str]:
    if not len(s.reinit):
        return []
    flat = s.flat
    if not len(flat):
        return []
    return ["### Did the clean models plateau?", "",
            "Validation weighted F1 of each clean cell per epoch (mean over seeds, at the cell's learning rate); a "
            f"last third of the epochs adding {results.PLATEAU_POINTS:g} point or more over the best before it "
            "counts as still rising.", "", _md(flat.assign(lr=flat["lr"].map(lr_text))), ""]


def curves(s: Study) -> list[str]:
    if not len(s.reinit):
        return []
    return (["## Degradation curves", ""]
            + s.figure(charts.degradation_curves(charts.curve_frame(s.reinit), select=False), "curves",
                       "degradation curves")
            + ["Weighted F1 against the share of layers re-initialised, bottom (red) and top (blue); bands are ± one "
               "std over seeds; the dashed line is the clean model; crosses mark cells with convergence failures, "
               "diamonds surprises.", ""])


def healing(s: Study) -> list[str]:
    if not len(s.reinit):
        return []
    t = s.reinit
    # a store of several experiments: each row says which it belongs to (keys.describe: "1000 training rows")
    rest = [k for k in results.line_keys(t) if k not in ("model", "dataset")]
    t = t.assign(experiment=describe(t, rest))
    columns = ["model", "dataset", *(["experiment"] if t["experiment"].map(bool).any() else []), "side", "level"]
    frame = t[[*columns, "probe_f1", "f1", "healing", "recovery"]].assign(
        **{"recovery 95% CI": [f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "–"
                               for lo, hi in zip(t["recovery_lo"], t["recovery_hi"])],
           "recovery vs probe": t["recovery_probe"]}).sort_values(columns[:-2] + ["level", "side"]).assign(
        level=lambda d: (100 * d["level"]).round().astype(int))
    missing = sorted({n for n in t["recovery_note"] if n})
    return ["### Damage and healing", "",
            "Probe F1 is a logistic regression on the frozen corrupted model's features before fine-tuning; "
            "healing = F1 after fine-tuning − probe F1; recovery = (F1 − F1_all) / (F1_clean − F1_all), given only "
            f"where clean − all exceeds {results.cell_table.RECOVERY_SE:g} standard errors (or "
            f"{results.cell_table.RECOVERY_MIN_GAP:g} points with one seed), with a 95% bootstrap interval over "
            "seeds; recovery vs probe = (F1 − probe) / (F1_clean − probe).", "",
            _md(frame.rename(columns={"level": "level %", "probe_f1": "probe F1", "f1": "F1"})), ""] + \
        (["No recovery ratio where: " + "; ".join(missing) + ".", ""] if missing else [])


def claims(s: Study) -> list[str]:
    if not len(s.reinit):
        return []
    lines = ["## The paper's claims, judged on these runs", "",
             "Each claim is decided by tests over seeds, never by a raw comparison: (1) each corrupted cell below its "
             "clean cell, (2) F1 falling with the share of layers corrupted (a one-sided slope test per side over "
             "every seed), (3) bottom below top at each level; one-sided, paired over seeds where they pair (else "
             "Welch's), each claim's p-values Holm-corrected together over the table. \"holds\": every test "
             "significant; \"mixed\": some; \"not supported\": none; with one seed a cell has no spread: \"not "
             "testable (n = 1)\", with the raw direction beside it.", "", _md(results.claims(s.reinit)), ""]
    rising = s.flat[s.flat["verdict"] == "still rising"] if len(s.flat) else s.flat
    if len(rising):
        lines += ["Caveat: the clean model was still rising at the last epoch on " + ", ".join(
            f"{r.dataset} ({r.model})" for r in rising.itertuples()) + "; there the claims compare against an "
            "under-trained reference, and more epochs could change their verdicts.", ""]
    tests = results.bottom_vs_top_tests(table1_variant(s.runs), s.reinit)
    if len(tests):
        tests = tests.assign(level=(100 * tests["level"]).round().astype(int))
        lines += ["### Bottom vs top: paired t-tests", "",
                  "Paired over seeds within a dataset (same seed, same data, bottom vs top at the same level), and "
                  "over datasets (cell means); p-values are two-sided, `p_adj` Holm-corrected over the table.", "",
                  _md(tests), ""]
    return lines


def flags_section(runs: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Convergence failures and flags (per run) and surprises (per cell), with the counts every page shows and each
    rule in one sentence."""
    counts = flags.summary(runs, table)
    lines = ["## Convergence failures, flags and surprises", "", f"{flags.summary_line(counts)}.", "",
             "The rules:", ""] + [f"- {rule}" for rule in flags.RULES.values()] + [""]
    for title, column, mask in (
            ("Convergence failures (per run; no score, left out of its cell):", "failures", "failed"),
            ("Flagged runs (per run; kept as measurements):", "flags", "flagged")):
        chosen = runs[runs[mask]] if len(runs) and mask in runs else runs.iloc[0:0]
        if len(chosen):
            lines += [title, ""]
            for r in chosen.to_dict("records"):
                lines.append(f"- `{r['run_id']}` ({r['model']}, {r['dataset']}, "
                             f"{results.setting_label(r['side'], r['level'])}, {r['pooling']} pooling, {r['mode']}, "
                             f"lr {lr_text(r['lr'])}, seed {r['seed']}): {'; '.join(r[column])}")
            lines.append("")
    odd = table[table["surprises"].map(bool)] if len(table) else table
    if len(odd):
        lines += ["Surprises (per cell; findings about the model, not failures):", ""]
        for r in odd.itertuples():
            lines.append(f"- {r.model} {r.dataset} {results.setting_label(r.side, r.level)} ({r.method}, "
                         f"{r.pooling} pooling, {r.mode}): {'; '.join(r.surprises)}")
        lines.append("")
    return lines


def variants(s: Study) -> list[str]:
    scored = results.reinit_only(results.scored(s.table))
    var = scored.drop(index=table1_variant(scored).index)
    if not len(var):
        return []
    pairs = set(zip(var["model"], var["dataset"]))  # another model's cells must not average in
    base = scored[[p in pairs for p in zip(scored["model"], scored["dataset"])]]
    # rows keep experiments apart (a second schedule is its own row, never averaged in): what sets them apart
    rest = [k for k in results.line_keys(base) if k not in ("model", "dataset", "pooling", "mode")]
    experiment = pd.Series("", index=base.index, dtype=object)
    for _, g in base.groupby(["model", "dataset"], sort=False):
        experiment[g.index] = describe(g, rest)
    piv = base.assign(setting=[results.setting_label(r.side, r.level) for r in base.itertuples()],
                      variant=base["pooling"] + " / " + base["mode"], experiment=experiment)
    piv = piv[piv["setting"].isin(set(results.setting_label(r.side, r.level) for r in var.itertuples()))]
    index = ["model", "dataset", *(["experiment"] if piv["experiment"].map(bool).any() else []), "setting"]
    wide = piv.pivot_table(index=index, columns="variant", values="f1", aggfunc="first").reset_index()
    return ["## Variants: mean pooling and linear probe", "",
            "Test weighted F1 (best epoch on validation; seeds as available per variant: "
            + ", ".join(f"{v}: {int(n)}" for v, n in piv.groupby("variant")["n_seeds"].min().items()) + ").", "",
            _md(wide), ""]


def comparisons(s: Study) -> list[str]:
    """Every setting that varies in the store, its first value against each other, cell by cell (healcore compare
    --by KEY): A / B / A − B with a significance mark, every other varying setting held at its most common value."""
    found = compare_tables.store_comparisons(s.table, s.runs, s.root)
    if not found:
        return []
    lines = ["## Comparisons", "",
             "Each setting that takes several values in this store, compared cell by cell (`healcore compare --by "
             "KEY`); cells are aligned on everything else, and each side keeps its own best learning rate.", ""]
    for key, held, result in found:
        lines += [f"### {result.attrs['a']} vs {result.attrs['b']}", ""]
        if held:
            lines += [f"Other settings held at: {held}.", ""]
        lines += [compare_tables.export(result, "md"), ""]
    return lines


def dose_response(s: Study) -> list[str]:
    scored = results.scored(s.table)
    dose = scored[scored["method"] == "noise"]
    if not len(dose):
        return []
    main = table1_variant(scored)
    clean_ref = main[main["side"] == "clean"][["model", "dataset", "f1"]].rename(columns={"f1": "clean F1"})
    d = dose.assign(strength=dose["strength"].astype(float)).sort_values("strength")
    d = d[["model", "dataset", "n_layers", "strength", "probe_f1", "f1", "n_seeds"]].merge(
        clean_ref, on=["model", "dataset"], how="left")
    chart = charts.line_over(d.assign(series="noise in all layers"), "strength", "f1", "series",
                             "noise sigma (x each tensor's std)", "weighted F1", "corruption")
    return (["## Beyond the paper: Gaussian noise, dose-response", ""] + s.figure(chart, "noise", "noise dose-response")
            + [_md(d.rename(columns={"n_layers": "layers", "probe_f1": "probe F1", "f1": "F1"})), ""])


def data_size(s: Study) -> list[str]:
    """Healing against training-set size (results/data_size.py): each setting measured at several max_train caps,
    its F1 and its deficit to the clean model at the same size."""
    from healcore.results import data_size as sizes

    points = sizes.size_points(s.table)
    if points.empty:
        return []
    chart = charts.size_curves(points, "f1", sizes.OUTCOMES["f1"], select=False)
    return (["## Healing against training-set size", "",
             "Each corruption setting measured at several `max_train` caps: one cell per cap (its kept learning "
             "rate, mean ± std over seeds), placed at the rows it trained on (after the cap and the validation "
             "carve-out). The deficit is the clean cell's F1 at the same size minus the cell's: a deficit that "
             "shrinks as the data grows is damage that more data heals.", ""]
            + s.figure(chart, "data-size", "weighted F1 against training rows, one line per corruption setting")
            + ["**Weighted F1**", "", _md(sizes.size_table(points, "f1")), "",
               "**Deficit to the clean model at the same size (F1 points)**", "",
               _md(sizes.size_table(points, "deficit")), ""])


def tsne(s: Study) -> list[str]:
    from healcore.results.projection import project

    reinit = s.reinit
    if not len(reinit):
        return []
    # per cell, the lowest-seed run whose best-epoch features are on disk (stores may hold them for some)
    kept = s.done[s.done["has_features"]].sort_values(["seed", "run_id"])
    lowest_seed = {r: i for i, r in enumerate(kept["run_id"])}
    feature_run = [min((r for r in ids if r in lowest_seed), key=lowest_seed.get, default=None)
                   for ids in reinit["run_ids"]]
    # the (model, dataset) with the most settings that have features (ties: alphabetical): the fullest picture
    with_features = reinit.assign(feature_run=feature_run)[[r is not None for r in feature_run]]
    counts = with_features.groupby(["model", "dataset"]).size().sort_index()
    panels, order = [], []
    for model, dataset in ([counts.idxmax()] if len(counts) else []):
        for side, pick in (("clean", min), ("top", min), ("bottom", min), ("all", max)):
            sub = with_features[(with_features["model"] == model) & (with_features["dataset"] == dataset)
                                & (with_features["side"] == side)]
            if not len(sub):
                continue
            cell = sub[sub["level"] == pick(sub["level"])].iloc[0]
            run_id = cell["feature_run"]
            proj = project(s.store.files(run_id), "best", "tsne")
            if proj is None:
                continue
            classes = (s.store.summary(run_id) or {}).get("classes") or []
            seed = s.done.set_index("run_id").loc[run_id, "seed"]
            name = (f"{model} {dataset} · {results.setting_label(cell['side'], cell['level'])} · seed {seed} · "
                    f"silhouette {proj['silhouette']:.2f} · kNN {proj['knn_accuracy']:.0f}%")
            order.append(name)
            panels.append(pd.DataFrame({"x": proj["xy"][:, 0], "y": proj["xy"][:, 1], "panel": name,
                                        "label": [classes[i] if i < len(classes) else str(i) for i in proj["labels"]]}))
    if not panels:
        return []
    return (["## t-SNE of [CLS] features after fine-tuning", ""]
            + s.figure(charts.embedding_panels(pd.concat(panels), order), "tsne", "t-SNE small multiples")
            + ["Test-set features at the best epoch (one run per setting: the lowest seed at the cell's learning "
               "rate), like the paper's Figure 1; silhouette of the true labels and 5-NN accuracy per panel.", ""])


def where_healing_happens(s: Study) -> list[str]:
    """CKA of healed layers to the clean fine-tuned and the pretrained model, weight movement, per-class
    recovery: per (model, dataset) whose re-initialised runs kept their layer analyses."""
    done = results.scored_runs(results.reinit_only(table1_variant(s.done)),
                               s.table)
    with_analysis = done[done["has_analysis"]]
    if not len(with_analysis):
        return []
    lines = ["## Where healing happens", "",
             "CKA between the per-layer representations (each hidden state mean-pooled "
             "over a sentence's tokens) of a fixed sample of test sentences: of each corrupted-then-fine-tuned layer "
             "against the same layer of the clean model fine-tuned the same way (same learning rate and seed where "
             f"one exists) and of the pretrained model before corruption. CKA here is {analysis.CKA_IN_WORDS}. "
             "Weight movement is ||W_T − W_0|| / ||W_0|| "
             "per block over fine-tuning. Each cell's runs at its kept learning rate (Table 1's runs); means over seeds.", ""]
    for (model, dataset), sub in with_analysis.groupby(["model", "dataset"]):
        line = done[(done["model"] == model) & (done["dataset"] == dataset)]
        layers = analysis.similarity_table(s.store, line)
        if not len(layers):
            continue
        name = f"{model}-{dataset}".replace("/", "-")
        lines += [f"### {model} on {dataset}", ""]
        matrices = analysis.mean_cka_matrices(s.store, line)
        if len(matrices):
            matrices = _settings(matrices)
            lines += s.figure(charts.cka_small_multiples(matrices), f"cka-{name}",
                              f"CKA of healed layers to the clean model, {model} on {dataset}")
        lines += ["Mean CKA to the same layer, over the layers that were corrupted and over those that were not:", "",
                  _md(layer_summary(layers)), ""]
        moved = analysis.movement_table(s.store, line)
        if len(moved):
            lines += ["Relative weight movement during fine-tuning (mean over runs and over the blocks of each kind):",
                      "", _md(movement_summary(moved)), ""]
        per_class = analysis.per_class_table(s.store, line)
        if len(per_class):
            lines += ["Per-class F1 (mean over seeds): the damage probe before fine-tuning, the healed model, the clean "
                      "model; the class that recovers least at each setting:", "", _md(class_summary(per_class)), ""]
    return lines


def layer_summary(layers: pd.DataFrame) -> pd.DataFrame:
    """Per setting: mean CKA to the clean fine-tuned and the pretrained model, of corrupted vs kept layers."""
    rows, keys = [], []
    for (side, level), g in layers.groupby(["side", "level"]):
        keys.append((side, level))
        row = {"setting": results.setting_label(side, level)}
        for kind, part in (("corrupted", g[g["corrupted"]]), ("kept", g[~g["corrupted"] & (g["depth"] > 0)])):
            row[f"{kind} layers: CKA to clean"] = part["cka_clean"].mean() if len(part) else np.nan
            row[f"{kind} layers: CKA to pretrained"] = part["cka_pretrained"].mean() if len(part) else np.nan
        rows.append(row)
    return _in_order(rows, keys)


def movement_summary(moved: pd.DataFrame) -> pd.DataFrame:
    rows, keys = [], []
    for (side, level), g in moved.groupby(["side", "level"]):
        keys.append((side, level))
        layer_rows = g[g["block"].str.startswith("layer ")]
        rows.append({"setting": results.setting_label(side, level),
                     "corrupted layers": layer_rows[layer_rows["corrupted"]]["movement"].mean(),
                     "kept layers": layer_rows[~layer_rows["corrupted"]]["movement"].mean(),
                     "embeddings": g[g["block"] == "embeddings"]["movement"].mean(),
                     "head": g[g["block"] == "head"]["movement"].mean()})
    return _in_order(rows, keys)


def class_summary(per_class: pd.DataFrame) -> pd.DataFrame:
    mean = per_class.groupby(["side", "level", "class"], as_index=False)[["before", "after", "clean"]].mean()
    mean["gap"] = mean["clean"] - mean["after"]
    rows, keys = [], []
    for (side, level), g in mean.groupby(["side", "level"]):
        keys.append((side, level))
        worst = g.sort_values("gap", ascending=False).iloc[0]
        rows.append({"setting": results.setting_label(side, level), "mean F1 before": g["before"].mean(),
                     "mean F1 healed": g["after"].mean(), "mean F1 clean": g["clean"].mean(),
                     "least recovered class": worst["class"],
                     "its F1 before / healed / clean": f"{worst['before']:.1f} / {worst['after']:.1f} / {worst['clean']:.1f}"})
    return _in_order(rows, keys)


def _in_order(rows: list[dict], keys: list[tuple[str, float]]) -> pd.DataFrame:
    """Rows of per-setting tables from the least to the most corruption, bottom before top."""
    order = sorted(range(len(rows)), key=lambda i: (keys[i][1], side_rank(keys[i][0])))
    return pd.DataFrame([rows[i] for i in order])


def _settings(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(setting=[results.setting_label(s, l) for s, l in zip(frame["side"], frame["level"])])


def _fmt(x, digits=2) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def damage_predicts(s: Study) -> list[str]:
    """Does damage, measured before fine-tuning, predict healing? Spearman's rho per model and dataset, each
    damage measure against each outcome, with a bootstrap interval and the number of cells (results/damage.py)."""
    from healcore.results import damage

    rows = damage.predictors(s.table)
    rows = rows[rows["n"] > 0]
    if rows.empty:
        return []
    out = ["## Does damage predict healing?", "",
           "Across the corrupted cells of each model and dataset: each damage measure before fine-tuning against "
           "what fine-tuning left. Spearman's rho with a bootstrap 95% interval (2,000 resamples of the cells); an "
           f"interval that spans 0 is no evidence either way; fewer than {damage.MIN_CELLS} cells give none.", ""]
    for (model, dataset), g in rows.groupby(["model", "dataset"], sort=True):
        out += [f"**{model} · {dataset}**", ""] + [f"- {damage.in_words(r)}" for _, r in g.iterrows()] + [""]
    return out
