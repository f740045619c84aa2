"""Where a workflow run stands: which jobs are running, what is left, and about how long it will take.

Snakemake itself reports "N of M steps done". This reads what Snakemake keeps in ``.snakemake/``:
the start and end time of every job that finished before (``metadata/``), and the outputs of jobs in
progress (``incomplete/``); a dry run gives the jobs still to do. From the median time of each rule
in earlier runs it estimates the time left; a running job whose log states its own time left (our
training loops log ``eta Ns``, a permuted-MNIST run ``job eta Ns`` for all its remaining tasks) counts
at that instead, less the time since the log was written. Run it beside a running workflow, from the same folder,
with the same target and config files:

    python -m modmask.progress figures/all --configfile config/quick.yaml --cores 2

After a run, ``--timing`` reports its job time, the time during which jobs ran, and its critical path (the
longest chain of dependent jobs), hence the least wall time on more cores.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Progress:
    to_do: dict[str, int]                          # rule -> jobs still to run (running ones included)
    typical: dict[str, float]                      # rule -> median seconds of its earlier jobs
    running: list[tuple[str, str | None, float]]   # (output, rule if known, seconds since it started)
    cores: int
    unknown: list[str] = field(default_factory=list)  # rules without earlier jobs
    last_log: dict[str, str] = field(default_factory=dict)  # running output -> last line of its log
    interrupted: list[tuple[str, str | None, float]] = field(default_factory=list)  # left by a run that died
    stale_locks: bool = False   # lock files that no Snakemake process on this machine holds
    log_left: dict[str, float] = field(default_factory=dict)  # running output -> seconds left, by its log

    def seconds_left(self) -> float:
        """Job-seconds still to do (the running jobs' elapsed time subtracted, or where a running job's log
        says how long it has left, that) over the cores."""
        fallback = statistics.median(self.typical.values()) if self.typical else 0.0
        # a rule without history counts at the median job time; "all" (a target list) costs nothing
        total = sum(count * self.typical.get(rule, 0.0 if rule == "all" else fallback)
                    for rule, count in self.to_do.items())
        for output, rule, elapsed in self.running:
            expected = self.typical.get(rule, fallback) if rule else fallback
            if output in self.log_left:
                total += self.log_left[output] - expected
            else:
                total -= min(elapsed, expected)
        return max(total, 0.0) / max(self.cores, 1)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _records(folder: Path):
    """(file, the output it stands for) under a Snakemake persistence folder: names are URL-safe
    base64 of the output, split into ``@``-prefixed folders when longer than a file name may be."""
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        encoded = "".join(part.lstrip("@") for part in path.relative_to(folder).parts)
        try:
            yield path, base64.urlsafe_b64decode(encoded).decode()
        except ValueError:
            continue


def job_records(workdir: str | Path = "."):
    """(output, rule, start, end) of every output in ``.snakemake/metadata``; start and end are ``None``
    unless the job that made it finished."""
    for path, output in _records(Path(workdir) / ".snakemake" / "metadata"):
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        start, end = record.get("starttime"), record.get("endtime")
        finished = start and end and end >= start and not record.get("incomplete")
        yield output, record.get("rule"), start if finished else None, end if finished else None


def job_history(workdir: str | Path = ".") -> tuple[dict[str, float], dict[str, str]]:
    """From ``.snakemake/metadata``: the median seconds per rule, and the rule that made each output."""
    durations: dict[str, list[float]] = {}
    rule_of: dict[str, str] = {}
    for output, rule, start, end in job_records(workdir):
        if not rule:
            continue
        rule_of[output] = rule
        if start is not None:
            durations.setdefault(rule, []).append(end - start)
    return {rule: statistics.median(values) for rule, values in durations.items()}, rule_of


def covered_seconds(spans) -> float:
    """How long at least one of the ``(start, end)`` intervals lasts: their union's length."""
    total, current = 0.0, None
    for start, end in sorted(spans):
        if current is None or start > current[1]:
            total += current[1] - current[0] if current else 0.0
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    return total + (current[1] - current[0] if current else 0.0)


def snakemake_running_in(workdir: str | Path = ".") -> bool | None:
    """Whether a Snakemake process on this machine works in ``workdir`` (dry runs aside); None where the
    processes cannot be listed (no ``/proc``)."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return None
    target = Path(workdir).resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if Path(os.readlink(entry / "cwd")) != target:
                continue
        except OSError:   # gone meanwhile, or another user's
            continue
        if any(os.path.basename(arg) == "snakemake" for arg in argv) and "--dry-run" not in argv:
            return True
    return False


def _lock_times(workdir) -> list[float]:
    return [path.stat().st_mtime for path in (Path(workdir) / ".snakemake" / "locks").glob("*.lock")]


def stale_locks(workdir: str | Path = ".") -> bool:
    """Lock files in ``workdir`` that no Snakemake process on this machine holds: a run killed without
    cleaning up left them (or the run is on another machine)."""
    return bool(_lock_times(workdir)) and snakemake_running_in(workdir) is False


def run_started(workdir: str | Path = ".") -> float | None:
    """When the Snakemake run now working in ``workdir`` started (its lock files' time), or None when none
    holds the folder (no locks, or locks that no Snakemake process on this machine holds)."""
    times = _lock_times(workdir)
    if not times or snakemake_running_in(workdir) is False:
        return None
    return min(times)


def _in_progress_markers(workdir, rule_of, now, started):
    """(live, job) per ``incomplete`` marker; ``started``: :func:`run_started` of ``workdir``."""
    folder = Path(workdir) / ".snakemake" / "incomplete"
    now = time.time() if now is None else now
    for path, output in _records(folder):
        mtime = path.stat().st_mtime
        # a marker older than the live run's locks was left by a run that died: its job runs no more
        live = started is not None and mtime >= started - 1.0
        yield live, (output, (rule_of or {}).get(output), now - mtime)


def running_jobs(workdir: str | Path = ".", rule_of: dict[str, str] | None = None, now: float | None = None):
    """Outputs of the jobs in progress (Snakemake's ``incomplete`` markers written since the live run
    started), their rule if an earlier run recorded it, and how long ago each started (the marker's age)."""
    return [job for live, job in _in_progress_markers(workdir, rule_of, now, run_started(workdir)) if live]


def interrupted_jobs(workdir: str | Path = ".", rule_of: dict[str, str] | None = None, now: float | None = None):
    """Jobs a run that died left unfinished (markers older than the live run, or any marker when no run
    holds the folder): the next run starts them again, from their checkpoint where they write one."""
    return [job for live, job in _in_progress_markers(workdir, rule_of, now, run_started(workdir)) if not live]


_JOB_STATS = re.compile(r"^Job stats:\n.*?\n-+\s+-+\n(.*?)^total\s+(\d+)", re.MULTILINE | re.DOTALL)


def parse_job_stats(text: str) -> dict[str, int]:
    """The first "Job stats" table of a Snakemake dry run: rule -> count."""
    match = _JOB_STATS.search(text)
    if not match:
        return {}
    counts = {}
    for line in match.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


_JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.MULTILINE)


def parse_jobs(text: str) -> dict[str, tuple[str, str | None]]:
    """Output -> (rule, log file or None) of every job a dry run lists."""
    jobs = {}
    for rule, body in _JOB.findall(text):
        fields = dict(line.strip().split(": ", 1) for line in body.splitlines() if ": " in line)
        log = fields.get("log", "").split(", ")[0] or None
        for output in fields.get("output", "").split(", "):
            if output:
                jobs[output] = (rule, log)
    return jobs


def dry_run(snakemake_args: list[str], workdir: str | Path = ".") -> str:
    """A dry run's text (``--nolock``: it may run beside the real run)."""
    command = [sys.executable, "-m", "snakemake", "--dry-run", "--nolock", *snakemake_args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the dry run failed ({' '.join(command[2:])}):\n{result.stderr[-2000:]}")
    return result.stdout + result.stderr


def last_line(path: Path) -> str | None:
    """The last non-empty line of a job's log (our jobs log steps/s and an estimate of their time left)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - 4096, 0))
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1].strip() if lines else None


_ETA = re.compile(r"\b(job )?eta (\d+(?:\.\d+)?)s\b")


def seconds_left_in_log(line: str | None, age: float = 0.0) -> float | None:
    """The time a job has left by its log's last line (``job eta Ns`` before ``eta Ns``: a loop's own time
    left), less ``age``, the seconds since that line was written; ``None`` when the line states none."""
    found = {bool(job): float(value) for job, value in _ETA.findall(line or "")}
    if not found:
        return None
    return max(found.get(True, found.get(False)) - age, 0.0)


def progress(snakemake_args: list[str], cores: int, workdir: str | Path = ".") -> Progress:
    typical, rule_of = job_history(workdir)
    text = dry_run(snakemake_args, workdir)
    jobs = parse_jobs(text)
    rule_of.update({output: rule for output, (rule, _) in jobs.items()})
    to_do = parse_job_stats(text)
    started = run_started(workdir)   # one look at the processes for the markers and the locks
    markers = list(_in_progress_markers(workdir, rule_of, None, started))
    running = [job for live, job in markers if live]
    interrupted = [job for live, job in markers if not live]
    stale = started is None and bool(_lock_times(workdir))   # locks, but no Snakemake process holds them
    logs = {output: Path(workdir) / log for output, (_, log) in jobs.items() if log}
    unknown = sorted(rule for rule in to_do if rule not in typical and rule != "all")
    last_log, log_left, now = {}, {}, time.time()
    for output, *_ in running:
        path = logs.get(output, Path("/-"))
        if (line := last_line(path)) is not None:
            last_log[output] = line
            try:
                age = now - path.stat().st_mtime
            except OSError:   # the log went away since it was read (the job ended)
                continue
            if (left := seconds_left_in_log(line, age)) is not None:
                log_left[output] = left
    return Progress(to_do, typical, running, cores, unknown, last_log, interrupted, stale, log_left)


def report(state: Progress) -> str:
    lines = []
    if state.running:
        lines.append(f"running ({len(state.running)}):")
        for output, rule, elapsed in state.running:
            typical = state.typical.get(rule) if rule else None
            lines.append(f"  {output}  ({rule or 'rule not known'}, {_duration(elapsed)} so far"
                         + (f", about {_duration(state.log_left[output])} left by its log" if output in state.log_left
                            else f", typically {_duration(typical)}" if typical else "") + ")")
            if output in state.last_log:
                lines.append(f"    log: {state.last_log[output]}")
    if state.interrupted:
        lines.append(f"interrupted ({len(state.interrupted)}; a run that stopped left them unfinished: they run "
                     "again, from their last checkpoint where they keep one):")
        lines += [f"  {output}  ({rule or 'rule not known'})" for output, rule, _ in state.interrupted]
    if state.stale_locks:
        lines.append("no Snakemake process on this machine works in this folder, but it holds lock files: a run "
                     "that was killed left them (unless the run is on another machine); `snakemake --unlock` "
                     "with the same arguments clears them")
    total = sum(state.to_do.values())
    if not total:
        return "\n".join(lines + ["nothing left to do"]) + "\n"
    parts = [f"{rule} {count}" + (f" (~{_duration(state.typical[rule])} each)" if rule in state.typical else "")
             for rule, count in sorted(state.to_do.items(), key=lambda kv: -kv[1])]
    lines.append(f"to do: {total} jobs: " + ", ".join(parts))
    if not state.typical:
        lines.append("time left: no estimate yet; it needs the times of earlier jobs (.snakemake/metadata), "
                     "which the first finished jobs provide")
        return "\n".join(lines) + "\n"
    left = state.seconds_left()
    lines.append(f"time left: about {_duration(left)} with {state.cores} cores (job times of earlier runs in "
                 f".snakemake/metadata" + (", running jobs' own logs" if state.log_left else "")
                 + ", divided over the cores; a long chain of dependent jobs takes longer)")
    if state.unknown:
        lines.append(f"no earlier jobs of {', '.join(state.unknown)}: counted at the median job time, "
                     "so the estimate is rough")
    return "\n".join(lines) + "\n"


def parse_job_io(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(rule, inputs, outputs) of every job a dry run lists."""
    jobs = []
    for rule, body in _JOB.findall(text):
        fields = dict(line.strip().split(": ", 1) for line in body.splitlines() if ": " in line)
        jobs.append((rule, [f for f in fields.get("input", "").split(", ") if f],
                     [f for f in fields.get("output", "").split(", ") if f]))
    return jobs


def output_times(workdir: str | Path = ".") -> dict[str, tuple[float, float]]:
    """Output -> (start, end) of the finished job that made it, from ``.snakemake/metadata``."""
    return {output: (start, end) for output, _, start, end in job_records(workdir) if start is not None}


@dataclass
class RunTiming:
    jobs: int                       # jobs of the target, finished ones timed
    untimed: int                    # jobs without a record (not run yet, or no output to record)
    job_seconds: float              # the timed jobs' durations added up
    active_seconds: float           # time during which at least one job ran (gaps between sessions left out)
    critical_seconds: float         # the longest chain of dependent jobs, by their durations
    critical_path: list[tuple[str, str, float]]  # that chain: (rule, first output, seconds), first job first

    def wall_on(self, cores: int) -> float:
        """A lower bound of the wall time on ``cores`` cores at one core per job: the critical path, or
        the job time spread over the cores, whichever is longer."""
        return max(self.critical_seconds, self.job_seconds / max(cores, 1))


def run_timing(jobs: list[tuple[str, list[str], list[str]]], times: dict[str, tuple[float, float]]) -> RunTiming:
    """Job time, active time and critical path of a run from its jobs (``parse_job_io`` of a dry run with
    ``--forceall``) and the recorded times of their outputs (``output_times``)."""
    producer = {output: index for index, (_, _, outputs) in enumerate(jobs) for output in outputs}
    spans, untimed = [], 0
    for _, _, outputs in jobs:
        recorded = [times[o] for o in outputs if o in times]
        if recorded:
            spans.append((min(s for s, _ in recorded), max(e for _, e in recorded)))
        else:
            spans.append(None)
            untimed += 1
    longest: dict[int, tuple[float, int | None]] = {}  # job -> (longest chain ending with it, previous job)

    def chain(index: int) -> float:
        if index not in longest:
            longest[index] = (0.0, None)  # a guard; the DAG has no cycles
            before = [(chain(p), p) for p in {producer[i] for i in jobs[index][1] if i in producer} if p != index]
            best, previous = max(before, default=(0.0, None))
            span = spans[index]
            longest[index] = (best + (span[1] - span[0] if span else 0.0), previous)
        return longest[index][0]

    end = max(range(len(jobs)), key=chain, default=None)
    path = []
    while end is not None:
        rule, _, outputs = jobs[end]
        span = spans[end]
        path.append((rule, outputs[0] if outputs else "", span[1] - span[0] if span else 0.0))
        end = longest[end][1]
    timed = [span for span in spans if span]
    return RunTiming(len(jobs), untimed, sum(e - s for s, e in timed), covered_seconds(timed),
                     longest[max(longest, key=lambda i: longest[i][0])][0] if longest else 0.0, path[::-1])


def timing_report(timing: RunTiming, cores: tuple[int, ...] = (2, 16)) -> str:
    lines = [f"{timing.jobs} jobs ({timing.untimed} without a recorded time), {_duration(timing.job_seconds)} of "
             f"job time; jobs ran during {_duration(timing.active_seconds)} (gaps with no job running left out)",
             f"critical path: {_duration(timing.critical_seconds)} over {len(timing.critical_path)} dependent jobs:"]
    lines += [f"  {rule:28s} {_duration(seconds):>7s}  {output}" for rule, output, seconds in timing.critical_path]
    for n in cores:
        lines.append(f"on {n} cores (one per job): at least {_duration(timing.wall_on(n))}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modmask.progress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="the run's --cores")
    parser.add_argument("--directory", default=".", help="the workflow's folder (default: here)")
    parser.add_argument("--timing", action="store_true",
                        help="after a run: its job time, critical path and the wall time it implies per core count")
    args, snakemake_args = parser.parse_known_args(argv)
    try:
        if args.timing:
            jobs = parse_job_io(dry_run([*snakemake_args, "--forceall"], args.directory))
            print(timing_report(run_timing(jobs, output_times(args.directory)), (args.cores, 16)), end="")
        else:
            print(report(progress(snakemake_args, args.cores, args.directory)), end="")
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
