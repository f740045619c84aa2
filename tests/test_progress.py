"""Progress of a running workflow: jobs left, running jobs, time left from earlier job times."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest

from modmask import progress as pg

DRY_RUN = """Building DAG of jobs...
Job stats:
job                   count
------------------  -------
mask                      4
pretrain                  2
all                       1
total                     7

[Sat Dec  5 22:02:19 2026]
rule pretrain:
    input: data.parquet
    output: results/net0.pt, results/net0.json
    log: logs/pretrain0.log
    jobid: 3

localrule all:
    input: results/net0.pt
    jobid: 0

Job stats:
job        count
-------  -------
mask           4
total          4
"""


def test_dry_run_text_gives_the_jobs_per_rule_and_each_outputs_rule_and_log():
    assert pg.parse_job_stats(DRY_RUN) == {"mask": 4, "pretrain": 2, "all": 1}
    assert pg.parse_jobs(DRY_RUN) == {"results/net0.pt": ("pretrain", "logs/pretrain0.log"),
                                      "results/net0.json": ("pretrain", "logs/pretrain0.log")}


def test_time_left_from_rule_medians_minus_what_running_jobs_already_did():
    state = pg.Progress(to_do={"mask": 4, "pretrain": 2, "all": 1}, typical={"mask": 60.0, "pretrain": 300.0},
                        running=[("results/net0.pt", "pretrain", 100.0), ("x", "mask", 500.0)], cores=2)
    # 4 x 60 + 2 x 300 = 840 job-seconds ("all" lists targets: nothing to run); the running pretrain
    # job did 100 of its 300, the running mask job is past its typical 60 (counted as done); 2 cores
    assert state.seconds_left() == pytest.approx((4 * 60 + 2 * 300 - 100 - 60) / 2)
    text = pg.report(state)
    assert "to do: 7 jobs: mask 4 (~60 s each), pretrain 2 (~5 min each), all 1" in text
    assert "time left: about 6 min with 2 cores" in text  # 340 s


def test_a_running_jobs_own_log_says_how_long_it_has_left():
    line = "18:53:06 INFO joint step 8000/30000 loss 0.1413 kept 0.002044 (18.0 steps/s, eta 1221s, job eta 6721s)"
    assert pg.seconds_left_in_log(line) == 6721.0           # the whole job (later tasks too), not the loop
    assert pg.seconds_left_in_log(line, age=721.0) == 6000.0  # written 721 s ago
    assert pg.seconds_left_in_log("mask step 200/800 loss 0.1 (5.0 steps/s, eta 120s)", age=20) == 100.0
    assert pg.seconds_left_in_log("mask step 200/800 (5.0 steps/s, eta 120s)", age=500) == 0.0
    assert pg.seconds_left_in_log("compiling the mask sampling kernels") is None
    assert pg.seconds_left_in_log(None) is None
    # a permuted-MNIST run 2 h from its end, though its rule's earlier jobs (a smoke run) took 8 min
    state = pg.Progress(to_do={"permuted_mnist_run": 2, "tables": 1}, typical={"permuted_mnist_run": 480.0,
                        "tables": 20.0}, running=[("run0.pt", "permuted_mnist_run", 120.0),
                                                  ("run1.pt", "permuted_mnist_run", 120.0)],
                        cores=2, log_left={"run0.pt": 7200.0})
    # run0 by its log: 7200; run1 by its rule: 480 - 120; tables 20; over 2 cores
    assert state.seconds_left() == pytest.approx((7200 + 480 - 120 + 20) / 2)
    text = pg.report(state)
    assert "run0.pt  (permuted_mnist_run, 2 min so far, about 2.0 h left by its log)" in text
    assert "run1.pt  (permuted_mnist_run, 2 min so far, typically 8 min)" in text
    assert "running jobs' own logs" in text


def test_long_output_names_split_into_folders_are_read_back(tmp_path):
    folder = tmp_path / ".snakemake" / "incomplete"
    output = "results/" + "x" * 300 + "/run.pt"
    encoded = base64.urlsafe_b64encode(output.encode()).decode()
    chunks = [encoded[i:i + 254] for i in range(0, len(encoded), 254)]  # as Snakemake splits them
    path = folder.joinpath(*["@" + c for c in chunks[:-1]], chunks[-1])
    path.parent.mkdir(parents=True)
    path.write_text("")
    os.utime(path, (time.time() - 30, time.time() - 30))
    _lock(tmp_path, age=40)
    [(name, rule, elapsed)] = pg.running_jobs(tmp_path, {output: "mask"})
    assert name == output and rule == "mask" and 29 <= elapsed < 60


_FAKE_RUNS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_fake_runs():
    yield
    while _FAKE_RUNS:
        run = _FAKE_RUNS.pop()
        run.kill()
        run.wait()
        if run.stdout is not None:
            run.stdout.close()


def _fake_snakemake(workdir) -> subprocess.Popen:
    """A process that looks like a Snakemake run working in ``workdir`` (its cwd; "snakemake" in argv)."""
    run = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)",
                            "snakemake"], cwd=workdir, stdout=subprocess.PIPE, text=True)
    _FAKE_RUNS.append(run)
    # wait until it runs: between fork and exec the child already has its cwd but still the parent's argv,
    # and a busy machine stretches that window (this test failed so under load)
    assert run.stdout.readline() == "up\n"
    return run


def _lock(workdir, age: float, live: bool = True) -> None:
    """The lock files a Snakemake run holds, written ``age`` seconds ago (when the run started); ``live``:
    with a process of that run working in ``workdir``."""
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("")
        os.utime(locks / name, (time.time() - age, time.time() - age))
    if live:
        _fake_snakemake(workdir)


def _marker(workdir, output: str, age: float) -> None:
    folder = workdir / ".snakemake" / "incomplete"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / base64.urlsafe_b64encode(output.encode()).decode()
    path.write_text("")
    os.utime(path, (time.time() - age, time.time() - age))


def test_jobs_left_by_a_run_that_died_are_interrupted_not_running(tmp_path):
    _marker(tmp_path, "results/a.pt", age=3600)  # its run died an hour ago
    _marker(tmp_path, "results/b.pt", age=60)
    # no run holds the folder: nothing is running
    assert pg.running_jobs(tmp_path) == []
    assert sorted(o for o, *_ in pg.interrupted_jobs(tmp_path)) == ["results/a.pt", "results/b.pt"]
    _lock(tmp_path, age=600)  # a run started ten minutes ago and restarted b
    assert [o for o, *_ in pg.running_jobs(tmp_path)] == ["results/b.pt"]
    assert [o for o, *_ in pg.interrupted_jobs(tmp_path)] == ["results/a.pt"]
    state = pg.Progress(to_do={"mask": 2}, typical={"mask": 100.0}, cores=1,
                        running=pg.running_jobs(tmp_path, {"results/b.pt": "mask"}),
                        interrupted=pg.interrupted_jobs(tmp_path, {"results/a.pt": "mask"}))
    text = pg.report(state)
    assert "running (1):\n  results/b.pt  (mask, 60 s so far" in text
    assert "interrupted (1;" in text and "  results/a.pt  (mask)" in text
    assert "time left: about 2 min with 1 cores" in text  # 200 s minus the 60 s b has run; a starts over


@pytest.mark.skipif(not os.path.exists("/proc/self/cwd"), reason="lists processes through /proc")
def test_locks_that_no_snakemake_process_holds_are_stale(tmp_path):
    """A run killed without cleaning up leaves its locks; its jobs are interrupted, not running."""
    _marker(tmp_path, "results/a.pt", age=60)
    _lock(tmp_path, age=600, live=False)
    assert pg.snakemake_running_in(tmp_path) is False and pg.stale_locks(tmp_path)
    assert pg.run_started(tmp_path) is None
    assert pg.running_jobs(tmp_path) == [] and [o for o, *_ in pg.interrupted_jobs(tmp_path)] == ["results/a.pt"]
    text = pg.report(pg.Progress(to_do={"mask": 1}, typical={"mask": 100.0}, cores=1, running=[],
                                 interrupted=pg.interrupted_jobs(tmp_path), stale_locks=pg.stale_locks(tmp_path)))
    assert "holds lock files: a run that was killed left them" in text and "snakemake --unlock" in text
    # the same folder with a Snakemake process working in it: its run holds the locks
    (tmp_path / "other").mkdir()
    elsewhere = _fake_snakemake(tmp_path / "other")
    assert pg.snakemake_running_in(tmp_path) is False   # a process in another folder does not count
    run = _fake_snakemake(tmp_path)
    assert pg.snakemake_running_in(tmp_path) is True and not pg.stale_locks(tmp_path)
    assert [o for o, *_ in pg.running_jobs(tmp_path)] == ["results/a.pt"]
    run.kill(), elsewhere.kill()


def _run_workflow(folder) -> None:
    """Snakemake on the Snakefile written into ``folder``, one core; it must succeed."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--quiet"], cwd=folder,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_progress_of_a_real_snakemake_workflow(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: "b.txt"\n\n'
        'rule a:\n    output: "a.txt"\n    shell: "sleep 1; echo a > {output}"\n\n'
        'rule b:\n    input: "a.txt"\n    output: "b.txt"\n    log: "b.log"\n    shell: "sleep 4; cat {input} > {output}"\n')
    _run_workflow(tmp_path)
    typical, rule_of = pg.job_history(tmp_path)
    assert rule_of == {"a.txt": "a", "b.txt": "b"}
    assert 1.0 <= typical["a"] < 3.0 and 4.0 <= typical["b"] < 6.0
    # b runs again: its output is gone, a run holds the folder since 2 s, b's incomplete marker says it
    # started 0.5 s ago, its log has a line
    (tmp_path / "b.txt").unlink()
    _lock(tmp_path, age=2)
    marker = tmp_path / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(b"b.txt").decode()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    os.utime(marker, (time.time() - 0.5, time.time() - 0.5))
    (tmp_path / "b.log").write_text("step 1/2\nstep 2/2, eta 600s\n\n")
    state = pg.progress([], cores=1, workdir=tmp_path)
    assert state.to_do == {"b": 1, "all": 1}
    assert [(o, r) for o, r, _ in state.running] == [("b.txt", "b")]
    assert state.last_log == {"b.txt": "step 2/2, eta 600s"}
    # the log said 600 s left when it was written (just before the dry run, which takes seconds): that,
    # less the log's age, not b's typical time, is what is left
    assert 540 < state.log_left["b.txt"] <= 600
    assert state.seconds_left() == pytest.approx(state.log_left["b.txt"])
    (tmp_path / "b.log").write_text("step 1/2\n")   # a log that states no time left: b's typical time
    state = pg.progress([], cores=1, workdir=tmp_path)
    elapsed = state.running[0][2]
    assert not state.log_left and state.seconds_left() == pytest.approx(max(typical["b"] - elapsed, 0.0), abs=0.05)
    assert pg.main(["--directory", str(tmp_path), "--cores", "1"]) == 0


def test_run_timing_finds_the_longest_chain_and_the_time_jobs_ran():
    # data -> (net -> mask_a, mask_b) -> table; a second chain: other. Hand-made times in seconds.
    jobs = [("data", [], ["d.pt"]), ("net", ["d.pt"], ["n.pt", "n.json"]), ("mask", ["n.pt", "d.pt"], ["a.pt"]),
            ("mask", ["n.pt"], ["b.pt"]), ("table", ["a.pt", "b.pt"], ["t.parquet"]), ("other", [], ["o.txt"]),
            ("all", ["t.parquet", "o.txt"], [])]
    times = {"d.pt": (0, 10), "n.pt": (10, 40), "n.json": (10, 41), "a.pt": (41, 50), "b.pt": (41, 61),
             "t.parquet": (61, 62), "o.txt": (200, 205)}
    timing = pg.run_timing(jobs, times)
    assert timing.jobs == 7 and timing.untimed == 1  # "all" has no output to record
    assert timing.job_seconds == pytest.approx(10 + 31 + 9 + 20 + 1 + 5)
    assert timing.active_seconds == pytest.approx(62 + 5)  # the gap 62..200 had no job running
    # data 10 + net 31 + mask b 20 + table 1 (mask a, 9 s, is the shorter branch)
    assert timing.critical_seconds == pytest.approx(62)
    assert [(r, o) for r, o, _ in timing.critical_path] == [("data", "d.pt"), ("net", "n.pt"), ("mask", "b.pt"),
                                                            ("table", "t.parquet")]
    assert timing.wall_on(1) == pytest.approx(76) and timing.wall_on(16) == pytest.approx(62)
    text = pg.timing_report(timing, (1, 16))
    assert "critical path: 62 s over 4 dependent jobs" in text and "on 16 cores (one per job): at least 62 s" in text


def test_run_timing_reads_a_real_run(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: "b.txt", "c.txt"\n\n'
        'rule a:\n    output: "a.txt"\n    shell: "sleep 1; echo a > {output}"\n\n'
        'rule b:\n    input: "a.txt"\n    output: "b.txt"\n    shell: "sleep 2; cat {input} > {output}"\n\n'
        'rule c:\n    output: "c.txt"\n    shell: "echo c > {output}"\n')
    _run_workflow(tmp_path)
    timing = pg.run_timing(pg.parse_job_io(pg.dry_run(["--forceall"], tmp_path)), pg.output_times(tmp_path))
    assert timing.jobs == 4 and timing.untimed == 1
    assert [rule for rule, _, _ in timing.critical_path] == ["a", "b"]  # "all" adds nothing
    assert 3.0 <= timing.critical_seconds < 6.0 and timing.job_seconds >= timing.critical_seconds
    assert pg.main(["--directory", str(tmp_path), "--cores", "1", "--timing"]) == 0
