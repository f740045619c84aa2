"""Reference results kept in the repository (``reference/``), and the README's findings written from them.

A run's tables outlive the machine only if they are committed. Per experiment, ``reference/<experiment>/``
holds the run's Parquet tables (each row with its provenance: scale, config hash, code version), its
figure PNGs under ``figures/``, and ``manifest.json`` (date, machine, wall time, the command). Networks,
masks and checkpoints stay out; only an unfinished long run's progress, cut to what its remaining tasks
need, waits in ``progress/`` (:mod:`modmask.carry`) until the finished run is exported.

    python -m modmask.reference export permuted_mnist --results results/long --wall-time "5.1 h" \\
        --command "snakemake results/long/permuted_mnist/sharing.parquet --cores 2 --configfile config/long.yaml"
    python -m modmask.reference export all --results results/quick --command "snakemake figures/all ..."
    python -m modmask.reference readme            # rewrite the README's generated blocks
    python -m modmask.reference readme --check    # exit 1 when README and reference/ disagree
    python -m modmask.reference compare results/quick   # your run beside the reference

The README's generated blocks sit between ``<!-- reference:<experiment> -->`` and
``<!-- /reference:<experiment> -->``; what lies between is rewritten, the rest of the README is not.
The findings are those of :mod:`modmask.summary`, computed from the tables in ``reference/``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from . import summary
from .io import atomic_path, read_parquet, read_table, write_json

# experiment -> (the summary's findings of it, table folders under results/, figure folders under figures/)
EXPERIMENTS = {
    "addmul": ((summary.addmul_rows, summary.sweep_rows), ("addmul", "addmul/sweeps"), ("addmul", "sweeps", "histogram")),
    "double_add": ((summary.double_add_rows,), ("double_add",), ("double_add",)),
    "permuted_mnist": ((summary.permuted_mnist_rows,), ("permuted_mnist",), ("permuted_mnist",)),
    "scan": ((summary.scan_rows,), ("scan",), ("scan",)),
    # cifar10_mask_length: benchmarks/cifar10_mask_length.py's table (results/<scale>/cifar10/mask_length.parquet)
    # and figure, kept beside the experiment's own (the workflow's figures/cifar10 is a rule's output folder)
    "cifar10": ((summary.cifar10_rows, summary.cifar10_mask_length_rows), ("cifar10",),
                ("cifar10", "cifar10_mask_length")),
    "mathematics": ((summary.mathematics_rows,), ("mathematics",), ("mathematics",)),
}
PROVENANCE_COLUMNS = ("scale", "config_hash", "code_version")
MANIFEST = "manifest.json"
REPOSITORY = Path(__file__).resolve().parents[1]


class ReferenceError(ValueError):
    """Bad input to a reference command; the message names the file or argument and what to do."""


def _experiment(name: str) -> None:
    if name not in EXPERIMENTS:
        raise ReferenceError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")


def machine() -> str:
    """The machine in words: CPU model, cores, memory; what a timing depends on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2 ** 30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return f"{model}, {os.cpu_count()} cores{memory}"


def _workflow_folder(results: Path) -> Path | None:
    """The folder of the Snakemake run that wrote ``results`` (the nearest one above it with ``.snakemake``)."""
    for folder in [results.resolve(), *results.resolve().parents]:
        if (folder / ".snakemake" / "metadata").is_dir():
            return folder
    return None


def measured_timing(experiment: str, results: str | Path, figures: str | Path = "figures") -> dict | None:
    """How long the experiment's jobs took, from the Snakemake records of the run that wrote ``results``:
    jobs, job-hours (their durations added up) and active hours (time during which at least one of them
    ran, so gaps between sessions do not count). ``None`` where no record is found."""
    from .progress import covered_seconds, job_records

    results = Path(results)
    workdir = _workflow_folder(results)
    if workdir is None:
        return None
    _, table_dirs, figure_dirs = EXPERIMENTS[experiment]
    relative = results.resolve().relative_to(workdir).as_posix()
    try:
        figures_relative = Path(figures).resolve().relative_to(workdir).as_posix()
    except ValueError:
        figures_relative = str(figures)
    prefixes = ([f"{relative}/{experiment}/", f"{relative}/data/{experiment}/"]
                + [f"{relative}/{folder}/" for folder in table_dirs]
                + [f"{figures_relative}/{folder}" for folder in figure_dirs])
    jobs: dict[tuple[str, float], tuple[float, float]] = {}  # (rule, start) -> (start, end): a job's outputs once
    for output, rule, start, end in job_records(workdir):
        if start is not None and output.startswith(tuple(prefixes)):
            key = (rule or "", round(start, 1))
            earlier = jobs.get(key, (start, end))
            jobs[key] = (min(start, earlier[0]), max(end, earlier[1]))
    if not jobs:
        return None
    spans = sorted(jobs.values())
    active = covered_seconds(spans)
    stamp = lambda t: _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    return {"jobs": len(jobs), "job_hours": round(sum(e - s for s, e in spans) / 3600, 3),
            "active_hours": round(active / 3600, 3), "first_start": stamp(spans[0][0]),
            "last_end": stamp(max(e for _, e in spans))}


def export(experiment: str, results: str | Path, reference: str | Path, figures: str | Path = "figures",
           wall_time: str = "", command: str = "", date: str | None = None, timing: bool = True,
           label: str = "") -> dict:
    """Copy one experiment's tables and figure PNGs from a finished run into ``reference/<experiment>/``.

    Every table must carry the provenance columns; the manifest records where and how the run was made.
    The old reference of the experiment is replaced as a whole, never mixed with the new one. With
    ``timing``, the manifest also records how long the jobs took, read from the run's Snakemake records
    (:func:`measured_timing`); turn it off where those records no longer tell (``snakemake --touch``
    rewrites them). ``label`` tells the run from other kept runs of the same scale (e.g. "30k steps per
    task"); the README names the run by it.
    """
    _experiment(experiment)
    results, reference = Path(results), Path(reference)
    _, table_dirs, figure_dirs = EXPERIMENTS[experiment]
    tables = [path for folder in table_dirs for path in sorted((results / folder).glob("*.parquet"))]
    if not tables:
        raise ReferenceError(f"no tables of {experiment} under {results}/{table_dirs[0]}/: run the workflow first "
                             f"(the experiment's tables are written by its collect rules)")
    scales, configs, codes, rows = set(), set(), set(), {}
    for path in tables:
        df = read_parquet(path)
        missing = [c for c in PROVENANCE_COLUMNS if c not in df.columns]
        if missing and len(df):
            raise ReferenceError(f"table {path} lacks the provenance column(s) {missing}; a reference table must "
                                 f"say which scale, config and code made each row: rebuild it with this version")
        if len(df):
            scales |= set(df["scale"].astype(str))
            configs |= set(df["config_hash"].astype(str))
            codes |= set(df["code_version"].astype(str))
        rows[str(path.relative_to(results))] = len(df)
    pngs = [path for folder in figure_dirs for path in sorted((Path(figures) / folder).glob("*.png"))]
    target = reference / experiment
    staging = reference / f".{experiment}.new"
    shutil.rmtree(staging, ignore_errors=True)
    for path in tables:
        # reference/<experiment>/ has the shape of results/<experiment>/, so the summary reads either
        destination = staging / path.relative_to(results / experiment)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    for path in pngs:
        destination = staging / "figures" / path.relative_to(figures)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    manifest = {
        "experiment": experiment,
        "scale": sorted(scales),
        "label": label,
        "config_hash": sorted(configs),
        "code_version": sorted(codes),
        "date": date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "wall_time": wall_time,
        "timing": measured_timing(experiment, results, figures) if timing else None,
        "command": command,
        "tables": rows,
        "figures": [str(p.relative_to(figures)) for p in pngs],
    }
    write_json(manifest, staging / MANIFEST)
    # swap in the whole folder at once: a reference is never half old, half new
    old = reference / f".{experiment}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def findings(experiment: str, results: str | Path) -> list[tuple[str, str, str]]:
    """The summary's findings of one experiment from a results tree (``results/<scale>`` or ``reference``)."""
    _experiment(experiment)
    return summary.rows_of(EXPERIMENTS[experiment][0], results)


def load_manifest(reference: str | Path, experiment: str) -> dict | None:
    path = Path(reference) / experiment / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReferenceError(f"{path} is not valid JSON ({error}); re-export the experiment") from error


def run_name(manifest: dict) -> str:
    """How the README names a kept run: its scale(s) and, where the export gave one, its label."""
    label = [manifest["label"]] if manifest.get("label") else []
    return ", ".join([f"{', '.join(manifest['scale'])} scale"] + label)


def _carried(reference: str | Path, experiment: str):
    """Each run whose progress :mod:`modmask.carry` keeps under ``reference/<experiment>/progress/``:
    ``("<variant> <seed>", the carried progress)``, read once."""
    from .carry import SUFFIX, read_carried

    for path in sorted((Path(reference) / experiment / "progress").glob(f"*/seed*{SUFFIX}")):
        yield f"{path.parent.name} {path.name[: -len(SUFFIX)]}", read_carried(path)


def carried_runs(carried: list[tuple[str, dict]]) -> dict[str, str]:
    """``{"<variant> <seed>": "<n> tasks"}`` (``"<n> tasks, finished"`` for a finished run) of the carried runs
    (:func:`_carried`)."""
    return {run: f"{len(state['tasks'])} task{'s' if len(state['tasks']) != 1 else ''}"
                 + (", finished" if state.get("finished") else "") for run, state in carried}


def carried_task_rows(carried: list[tuple[str, dict]], kept_sharing: pd.DataFrame | None = None) -> list[str]:
    """Markdown table rows of what the carried runs' (:func:`_carried`) finished tasks found so far: per run
    and task after the first, the share of the task's mask that earlier tasks used, per weight layer that is
    not re-initialised and in total, and the task's test accuracy with its mask (the rows its tables will have
    when it ends). With ``kept_sharing`` (the sharing table of the experiment's kept reference run), a last
    column gives that run's shares at the same variant, seed and task."""
    rows = []
    for run, state in carried:
        variant, _, seed = run.partition(" seed")
        for task in state["tasks"][1:]:
            own = task.get("accuracy", {}).get("own_mask")
            row = (f"| {run} | {task['task']} | {_layer_shares(task.get('sharing', []))} | "
                   f"{'' if own is None else f'{100 * own:.1f}%'} |")
            if kept_sharing is not None:
                same = kept_sharing[(kept_sharing["variant"] == variant) & (kept_sharing["seed"].astype(str) == seed)
                                    & (kept_sharing["task"] == task["task"])]
                row += f" {_layer_shares(same.to_dict('records')) or 'not in that run'} |"
            rows.append(row)
    return rows


def _layer_shares(sharing_rows) -> str:
    """``layer 2 2.7%; layer 3 1.5%; ...``: the shared fraction of each weight layer that is not re-initialised."""
    return "; ".join(f"{r['layer_label']} {100 * r['shared_fraction']:.1f}%" for r in sharing_rows
                     if not r.get("reinitialised") and not str(r.get("layer", "")).endswith("bias"))


def readme_block(experiment: str, reference: str | Path = "reference", link_prefix: str = "reference",
                 kept: tuple[Path, str] | None = None) -> str:
    """The generated part of an experiment's README section: where the run comes from, its findings
    against the paper's, and its figures. ``kept``: (reference folder, link prefix) of the experiment's main
    kept run, which a run beside it is compared with: task by task while it is under way, finding by finding
    once it is kept."""
    reference = Path(reference)
    manifest = load_manifest(reference, experiment)
    kept_manifest = load_manifest(kept[0], experiment) if kept is not None else None
    if manifest is None:
        carried = list(_carried(reference, experiment))
        if not carried:
            return f"No reference run of this experiment is kept yet (`{link_prefix}/{experiment}/` is empty).\n"
        text = (f"No finished reference run of this experiment is kept yet. A run under way across sessions "
                f"carries its progress in `{link_prefix}/{experiment}/progress/` (`python -m modmask.carry`); "
                f"finished tasks per run: "
                + ", ".join(f"{run} {tasks}" for run, tasks in carried_runs(carried).items()) + ".\n")
        kept_sharing = None
        if kept_manifest is not None:
            sharing_path = kept[0] / experiment / "sharing.parquet"
            if sharing_path.exists():
                kept_sharing = read_table(sharing_path, ("variant", "seed", "task", "layer", "layer_label",
                                                         "reinitialised", "shared_fraction"))
        rows = carried_task_rows(carried, kept_sharing)
        if rows:
            header = "| run | task | % of the task's mask used by an earlier task | test accuracy with its mask |"
            if kept_sharing is not None:
                header += f" the same in the kept run of `{kept[1]}/{experiment}/` ({run_name(kept_manifest)}) |"
            text += ("\nWhat the finished tasks found so far (from the carried progress):\n\n" + header + "\n"
                     + "|---" * header.count(" |") + "|\n" + "\n".join(rows) + "\n")
        return text
    lines = [f"Reference run ({run_name(manifest)}), {manifest['date']}, {manifest['machine']}"
             + (f", wall time {manifest['wall_time']}" if manifest.get("wall_time") else "")
             + (f"; measured from its Snakemake records: {t['jobs']} jobs, {t['job_hours']:.2f} job-hours, jobs "
                f"running during {t['active_hours']:.2f} h between {t['first_start']} and {t['last_end']}"
                if (t := manifest.get("timing")) else "")
             + f"; code version {', '.join(manifest['code_version'])}."]
    if manifest.get("command"):
        lines[0] += f" Made by `{manifest['command']}`."
    rows = findings(experiment, reference)
    if rows and kept_manifest is not None:
        # a second run kept beside the main one: each finding next to the main run's
        theirs = {a: c for a, _, c in findings(experiment, kept[0])}
        lines += ["", f"| finding | paper | this run (mean ± std over seeds) | the kept run of "
                      f"`{kept[1]}/{experiment}/` ({run_name(kept_manifest)}) |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {theirs.get(a, 'not in that run')} |" for a, b, c in rows]
    elif rows:
        lines += ["", "| finding | paper | reference run (mean ± std over seeds) |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    figures = manifest.get("figures", [])
    if figures:
        lines.append("")
        lines += [f"![{Path(f).stem}]({link_prefix}/{experiment}/figures/{f})" for f in figures]
    return "\n".join(lines) + "\n"


# The paper's main figures, shown together at the top of the README's results: (label, experiment, the
# figure's path under reference/<experiment>/figures/, what it shows).
MAIN_FIGURES = [
    ("Fig. 1", "addmul", "addmul/fig01_sharing_per_layer.png", "weights shared by the addition and "
     "multiplication masks, per layer"),
    ("Fig. 2", "double_add", "double_add/fig02_accuracy_masks_inverted.png", "double addition: accuracy with "
     "each pair's mask inverted"),
    ("Fig. 3", "permuted_mnist", "permuted_mnist/fig03_sharing_normal_init.png", "permuted MNIST: sharing with "
     "earlier tasks as layers fill up"),
    ("Fig. 4a", "scan", "scan/fig04_a_split_masks.png", "SCAN: masks trained on each split, scored on every "
     "split"),
    ("Fig. 5", "mathematics", "mathematics/fig05_mathematics.png", "Mathematics Dataset: hard-level accuracy "
     "per task without a mask, through the control mask and through the easy-only mask"),
    ("Fig. 6a", "cifar10", "cifar10/fig06_a_removed_class_drop.png", "CIFAR-10: accuracy drop of the class "
     "whose exclusive weights are removed"),
]
GALLERY = "gallery"


def gallery_block(reference: str | Path = "reference", link_prefix: str = "reference") -> str:
    """The README's block of the paper's main figures from ``reference/``; those not kept yet are named."""
    reference = Path(reference)
    lines, missing = [], []
    for label, experiment, figure, what in MAIN_FIGURES:
        if (reference / experiment / "figures" / figure).exists():
            lines.append(f"**{label}**: {what} (`reference/{experiment}`).\n\n"
                         f"![{label}]({link_prefix}/{experiment}/figures/{figure})\n")
        else:
            missing.append(f"{label} ({experiment})")
    if missing:
        lines.append(f"Not kept in `reference/` yet: {', '.join(missing)}; their sections below give the numbers "
                     f"of earlier runs.\n")
    return "\n".join(lines)


# A generated block: <!-- reference:NAME --> ... <!-- /reference:NAME -->. NAME is "gallery", an experiment
# (reference/<experiment>/), or "<folder>/<experiment>": a second run of the experiment kept beside the main one,
# e.g. quick/permuted_mnist, the quick-scale run of an experiment whose main reference is a long run.
_BLOCK = re.compile(r"(?P<open><!-- reference:(?P<name>[\w.-]+(?:/[\w.-]+)*) -->\n)(?P<body>.*?)"
                    r"(?P<close><!-- /reference:(?P=name) -->)", re.DOTALL)


def _block(name: str, reference: Path) -> str:
    if name == GALLERY:
        return gallery_block(reference)
    folder, _, experiment = name.rpartition("/")
    if experiment not in EXPERIMENTS:
        raise ReferenceError(f"the README block <!-- reference:{name} --> names no experiment; its name must be "
                             f"one of {sorted(EXPERIMENTS)}, optionally after a folder of reference/ "
                             f"(e.g. quick/permuted_mnist), or {GALLERY!r}")
    link_prefix = "/".join(part for part in ("reference", folder) if part)
    if not folder:
        return readme_block(experiment, reference, link_prefix)
    return readme_block(experiment, reference / folder, link_prefix, kept=(reference, "reference"))


def render_readme(text: str, reference: str | Path = "reference") -> str:
    """``text`` with every generated block rewritten from ``reference``."""
    reference = Path(reference)
    return _BLOCK.sub(lambda m: m.group("open") + _block(m.group("name"), reference) + m.group("close"), text)


# ---- comparing a run with the reference -----------------------------------------------------------
_MEAN_STD = re.compile(r"(-?\d+(?:\.\d+)?)\s*(%|×)?\s*±\s*(\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _resolution(number: str) -> float:
    """One unit of the last printed digit of ``number`` ("0.0" -> 0.1, "3" -> 1)."""
    return 10.0 ** -len(number.partition(".")[2])


def _values(text: str) -> list[tuple[float, float | None]]:
    """The numbers of a finding: ``(mean, std)`` for each "m ± s", else ``(value, None)``. A printed std is
    never taken as smaller than one unit of its last digit: "± 0.0" says the spread is below 0.05, not 0."""
    pairs = [(float(m), max(float(s), _resolution(s))) for m, _, s in _MEAN_STD.findall(text)]
    if pairs:
        return pairs
    return [(float(v), None) for v in _NUMBER.findall(re.sub(r"β=\S+", "", text))]


def verdict(ours: str, theirs: str, spread: float = 2.0) -> str:
    """``"agrees"``, ``"differs"`` (a mean apart by more than ``spread`` x the larger std, a printed std
    counting as at least one unit of its last digit) or ``"no spread"`` (single values: compare by eye)."""
    a, b = _values(ours), _values(theirs)
    if not a or len(a) != len(b):
        return "not comparable"
    if any(s is None for _, s in a + b):
        return "no spread" if a != b else "agrees"
    for (m1, s1), (m2, s2) in zip(a, b):
        if abs(m1 - m2) > spread * max(s1, s2) and not math.isclose(m1, m2):
            return "differs"
    return "agrees"


def _provenance_of_run(experiment: str, results: Path, columns: tuple[str, ...]) -> dict[str, set[str]]:
    """Per provenance column (scale, config hash), its values in a results tree's tables of ``experiment``:
    those of the first table that has the column and rows (an empty set where none has)."""
    found: dict[str, set[str]] = {}
    for folder in EXPERIMENTS[experiment][1]:
        for path in sorted((results / folder).glob("*.parquet")):
            df = read_parquet(path)
            for column in columns:
                if column not in found and column in df.columns and len(df):
                    found[column] = set(df[column].astype(str))
            if len(found) == len(columns):
                return found
    return {column: found.get(column, set()) for column in columns}


def kept_runs(reference: str | Path, experiment: str) -> list[tuple[Path, dict]]:
    """The kept runs of ``experiment``: ``reference/<experiment>`` first, then those in folders of
    ``reference/`` (``reference/quick/<experiment>``), each as (the folder that holds it, its manifest)."""
    reference = Path(reference)
    roots = [reference]
    if reference.is_dir():
        roots += sorted(p for p in reference.iterdir()
                        if p.is_dir() and p.name not in EXPERIMENTS and not p.name.startswith("."))
    return [(root, manifest) for root in roots if (manifest := load_manifest(root, experiment)) is not None]


def compare(results: str | Path, reference: str | Path = "reference", spread: float = 2.0) -> pd.DataFrame:
    """Every finding of the reference beside the same finding of ``results``, with a verdict. Where an
    experiment has several kept runs, the one made with ``results``' config is compared, else the first one
    of ``results``' scale, else the main one."""
    records = []
    for experiment in EXPERIMENTS:
        runs = kept_runs(reference, experiment)
        if not runs:
            continue
        ours_provenance = _provenance_of_run(experiment, Path(results), ("config_hash", "scale"))
        root, _ = next(((r, m) for r, m in runs if ours_provenance["config_hash"] & set(m.get("config_hash", []))),
                       next(((r, m) for r, m in runs if ours_provenance["scale"] & set(m.get("scale", []))), runs[0]))
        ours = dict((a, c) for a, _, c in findings(experiment, results))
        for finding, paper, value in findings(experiment, root):
            mine = ours.get(finding)
            records.append({"experiment": experiment, "kept_run": (Path(reference).name / root.relative_to(reference)
                                                                   / experiment).as_posix(), "finding": finding,
                            "paper": paper, "reference": value,
                            "yours": mine if mine is not None else "(not in your run)",
                            "verdict": verdict(mine, value, spread) if mine is not None else "missing"})
    return pd.DataFrame(records, columns=["experiment", "kept_run", "finding", "paper", "reference", "yours",
                                          "verdict"])


def compare_markdown(df: pd.DataFrame) -> str:
    lines = ["| finding | paper | reference | yours | verdict | kept run |", "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        mark = f"**{r.verdict}**" if r.verdict in ("differs", "missing") else r.verdict
        lines.append(f"| {r.finding} | {r.paper} | {r.reference} | {r.yours} | {mark} | {r.kept_run} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modmask.reference", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command_name", required=True)
    ex = sub.add_parser("export", help="copy an experiment's tables and figures into reference/")
    ex.add_argument("experiment", choices=[*sorted(EXPERIMENTS), "all"],
                    help="an experiment, or all: every experiment with tables under --results")
    ex.add_argument("--results", required=True, help="the run's results folder, e.g. results/long")
    ex.add_argument("--figures", default="figures", help="the run's figures folder (default: figures)")
    ex.add_argument("--reference", default=str(REPOSITORY / "reference"))
    ex.add_argument("--wall-time", default="", help='how long the run took, e.g. "5.1 h" (measured)')
    ex.add_argument("--command", default="", help="the command that made the run")
    ex.add_argument("--label", default="", help='what tells the run from other kept runs of its scale, '
                                                'e.g. "30k steps per task"')
    ex.add_argument("--no-measured-timing", action="store_true",
                    help="do not read the jobs' times from .snakemake/metadata (e.g. after snakemake --touch)")
    rd = sub.add_parser("readme", help="rewrite the README's generated blocks from reference/")
    rd.add_argument("--readme", default=str(REPOSITORY / "README.md"))
    rd.add_argument("--reference", default="reference", help="relative to the README's folder")
    rd.add_argument("--check", action="store_true", help="change nothing; exit 1 when the README is out of date")
    cp = sub.add_parser("compare", help="your run's findings beside the reference's")
    cp.add_argument("results", help="your results folder, e.g. results/quick")
    cp.add_argument("--reference", default=str(REPOSITORY / "reference"))
    cp.add_argument("--spread", type=float, default=2.0, help="flag means further apart than this x the seed std")
    cp.add_argument("--out", help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    try:
        if args.command_name == "export":
            names = [args.experiment] if args.experiment != "all" else [
                name for name in EXPERIMENTS if any((Path(args.results) / name).glob("*.parquet"))]
            if not names:
                raise ReferenceError(f"no experiment's tables under {args.results}: run the workflow first")
            for name in names:
                manifest = export(name, args.results, args.reference, args.figures, args.wall_time, args.command,
                                  timing=not args.no_measured_timing, label=args.label)
                print(f"{Path(args.reference) / name}: {len(manifest['tables'])} tables, "
                      f"{len(manifest['figures'])} figures")
            print("now run: python -m modmask.reference readme")
        elif args.command_name == "readme":
            readme = Path(args.readme)
            text = readme.read_text()
            new = render_readme(text, readme.parent / args.reference)
            if args.check:
                if new != text:
                    print(f"{readme} disagrees with {args.reference}/: run python -m modmask.reference readme",
                          file=sys.stderr)
                    return 1
                return 0
            if new != text:
                with atomic_path(readme) as tmp:
                    tmp.write_text(new)
        else:
            df = compare(args.results, args.reference, args.spread)
            if df.empty:
                print(f"no reference run under {args.reference}", file=sys.stderr)
                return 1
            text = compare_markdown(df)
            print(text, end="")
            if args.out:
                with atomic_path(args.out) as tmp:
                    tmp.write_text(text)
    except (ReferenceError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
