"""Carry an unfinished long run from one machine to the next through the repository.

A machine's ``results/`` folder goes with the machine. A sequential run of many hours (permuted MNIST
at paper length: 11 tasks per job, hours per job on a CPU) outlives a session only if its progress is
committed. ``out`` writes each run's progress after its last finished task, cut to what the remaining
tasks need (the experiment module's ``portable_progress``), gzip-compressed, to
``reference/<experiment>/progress/<variant>/seed<k>.pt.gz``; a finished run is carried as progress after
its last task. ``in`` puts that progress back under ``results/`` where the run's job resumes from it, so
the same Snakemake command continues the run on the new machine:

    python -m modmask.carry out permuted_mnist --results results/long    # before the machine goes; commit
    python -m modmask.carry in permuted_mnist --results results/long     # on the next machine, then Snakemake

Neither direction ever replaces progress with less progress (fewer finished tasks), so running either
twice, or on a machine that got further, loses nothing. The work inside a task that has not finished is
not carried (its checkpoint holds the optimiser state of the whole network: tens of MB). Files are read
with ``weights_only`` loads: nothing carried can run code.
"""
from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

from . import experiments
from .io import atomic_path, load_torch, plain_artefact, save_torch

REPOSITORY = Path(__file__).resolve().parents[1]
SUFFIX = ".pt.gz"


class CarryError(ValueError):
    """Bad input to a carry command; the message names the file or argument and what to do."""


def _module(experiment: str):
    try:
        module = experiments.get(experiment)
    except (KeyError, ValueError) as error:
        raise CarryError(f"unknown experiment {experiment!r}: {error}") from None
    if not hasattr(module, "portable_progress"):
        raise CarryError(f"{experiment} has no sequential long run to carry (only experiments whose module defines "
                         f"portable_progress have one: permuted_mnist)")
    return module


def _runs(results: Path, experiment: str) -> list[Path]:
    """Each run's folder ``results/<experiment>/<variant>/seed<k>/``."""
    return sorted(path for path in (results / experiment).glob("*/seed*") if path.is_dir())


def _carried_path(reference: Path, experiment: str, run: Path) -> Path:
    return reference / experiment / "progress" / run.parent.name / f"{run.name}{SUFFIX}"


def read_carried(path: Path) -> dict:
    import torch

    try:
        data = gzip.decompress(Path(path).read_bytes())
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- name the file and the remedy
        raise CarryError(f"{path} cannot be read ({type(error).__name__}: {str(error)[:200]}): restore it from git "
                         f"(git checkout -- {path}) or delete it to run those tasks again") from None


def write_carried(state: dict, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(plain_artefact(state, f"the progress for {path}"), buffer)
    with atomic_path(path) as tmp:
        # mtime=0: the same progress gives the same bytes, so git sees no change where there is none
        tmp.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))


def carry_out(experiment: str, results: str | Path, reference: str | Path) -> list[str]:
    """Write every run's progress under ``results`` into ``reference``; returns one line per run."""
    from .steps import progress_identity

    module = _module(experiment)
    results, reference = Path(results), Path(reference)
    runs = _runs(results, experiment)
    if not runs:
        raise CarryError(f"no runs of {experiment} under {results / experiment}/: nothing to carry "
                         f"(is --results the folder of the long run, e.g. results/long?)")
    lines = []
    for run in runs:
        finished, progress = run / "run.pt", run / "run.pt.ckpt"
        if finished.exists():
            result = load_torch(finished)
            state = module.finished_progress(result, progress_identity(result["provenance"]))
        elif progress.exists():
            state = module.portable_progress(load_torch(progress))
        else:
            lines.append(f"{run}: no finished task yet, nothing to carry")
            continue
        target = _carried_path(reference, experiment, run)
        done = len(state["tasks"])
        if target.exists():
            carried = read_carried(target)
            if carried.get("identity") != state.get("identity"):
                # another run's progress (other settings: a 30k-step run beside the 10k one, say)
                raise CarryError(f"{target} holds the progress of a run with other settings than {run}; carry "
                                 f"this run into a folder of its own (--reference reference/<name>) or delete "
                                 f"{target} if that run is no longer wanted")
            if len(carried["tasks"]) > done or (len(carried["tasks"]) == done and carried.get("finished")
                                                 and not state.get("finished")):
                lines.append(f"{run}: kept {target} ({len(carried['tasks'])} tasks; this machine has {done})")
                continue
        write_carried(state, target)
        lines.append(f"{run}: {done} tasks{' (finished)' if state.get('finished') else ''} -> {target} "
                     f"({target.stat().st_size / 1e3:.0f} kB)")
    return lines


def carry_in(experiment: str, results: str | Path, reference: str | Path) -> list[str]:
    """Put the carried progress back under ``results`` where the runs' jobs resume from it."""
    module = _module(experiment)
    results, reference = Path(results), Path(reference)
    carried_files = sorted((reference / experiment / "progress").glob(f"*/seed*{SUFFIX}"))
    if not carried_files:
        raise CarryError(f"no carried progress of {experiment} under {reference / experiment / 'progress'}/")
    lines = []
    for path in carried_files:
        run = results / experiment / path.parent.name / path.name[: -len(SUFFIX)]
        target = run / "run.pt.ckpt"
        if (run / "run.pt").exists():
            lines.append(f"{path}: {run / 'run.pt'} is already finished here, left alone")
            continue
        carried = read_carried(path)
        if target.exists():
            here = load_torch(target)
            if len(here.get("tasks", [])) >= len(carried["tasks"]):
                lines.append(f"{path}: {target} already has {len(here['tasks'])} tasks, left alone")
                continue
        save_torch(module.resumable_progress(carried), target)
        lines.append(f"{path}: {len(carried['tasks'])} tasks -> {target}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modmask.carry", description=__doc__.split("\n\n")[0])
    parser.add_argument("direction", choices=["out", "in"],
                        help="out: results -> reference/<experiment>/progress; in: the reverse")
    parser.add_argument("experiment", help="the experiment whose runs to carry (permuted_mnist)")
    parser.add_argument("--results", required=True, help="the run's results folder, e.g. results/long")
    parser.add_argument("--reference", default=str(REPOSITORY / "reference"))
    args = parser.parse_args(argv)
    try:
        carry = carry_out if args.direction == "out" else carry_in
        for line in carry(args.experiment, args.results, args.reference):
            print(line)
    except (CarryError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
