"""Training jobs killed mid-training resume from their last checkpoint and end, bit for bit, where an
uninterrupted run ends (CPU). Real jobs through Snakemake, killed with SIGKILL:

- the job's process alone (as a SLURM time limit, preemption or the OOM killer would): Snakemake's
  retry (profiles/default: ``retries: 1``) starts it again within the same run;
- the whole Snakemake run (the machine goes away): the user starts the same command again.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from local_data import copy_workflow
from modmask.io import load_torch

WORKFLOW_FILES = ["Snakefile", "rules", "scripts", "config", "envs", "modmask", "profiles"]
RUN = "results/smoke/addmul/fnn/seed0"
NETWORK = f"{RUN}/network.pt"
MASK = f"{RUN}/main/mask_add.pt"
PRETRAIN_STEPS, MASK_STEPS, EVERY = 4000, 2000, 250
OVERRIDE = f"""\
checkpoint_every: {EVERY}
experiments:
  addmul:
    pretrain: {{steps: {PRETRAIN_STEPS}}}
    mask: {{steps: {MASK_STEPS}}}
"""


def make_workflow(path: Path) -> Path:
    path.mkdir()
    copy_workflow(path, WORKFLOW_FILES)
    (path / "resume.yaml").write_text(OVERRIDE)
    return path


def command(*targets: str) -> list[str]:
    # the workflow's default profile applies (retries, keep-going); one job at a time
    return [sys.executable, "-m", "snakemake", *targets, "--cores", "1",
            "--configfile", "config/smoke.yaml", "resume.yaml"]


def start(workdir: Path, *targets: str) -> subprocess.Popen:
    return subprocess.Popen(command(*targets), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before {path} appeared:\n{proc.stdout.read()[-5000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} after {timeout}s")
        time.sleep(0.01)


def job_process(snakemake: subprocess.Popen, script: str) -> psutil.Process:
    """The running job: the process under this Snakemake run that executes ``scripts/<script>``."""
    for child in psutil.Process(snakemake.pid).children(recursive=True):
        try:
            if any(arg.endswith(f".{script}") for arg in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no running {script} job under snakemake (pid {snakemake.pid})")


def checkpoint_step(path: Path) -> int:
    return int(load_torch(path)["step"])


def assert_identical(a, b, where="file"):
    """Same structure, same values; tensors equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def load(path: Path):
    return load_torch(path)  # the safe loader, as the jobs use it


@pytest.mark.slow
def test_killed_training_jobs_resume_and_match_an_uninterrupted_run(tmp_path):
    reference = start(make_workflow(tmp_path / "reference"), MASK)
    work = make_workflow(tmp_path / "killed")

    # 1. Kill the pretraining job's process after its first checkpoints; Snakemake retries the job.
    run = start(work, NETWORK)
    checkpoint = work / f"{NETWORK}.ckpt"
    wait_for(checkpoint, run)
    job = job_process(run, "network.py")
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    killed_at = checkpoint_step(checkpoint)
    assert 0 < killed_at < PRETRAIN_STEPS and killed_at % EVERY == 0
    finish(run)
    log = (work / "results/smoke/logs/addmul/fnn/seed0/pretrain.log").read_text()
    resumed = [int(s) for s in re.findall(r"resuming from checkpoint \S+network\.pt\.ckpt at step (\d+)", log)]
    assert resumed == [killed_at], log
    assert f"train step {PRETRAIN_STEPS}/{PRETRAIN_STEPS}" in log
    assert not checkpoint.exists(), "a finished job removes its checkpoint"

    # 2. Kill the whole Snakemake run while it trains a mask; run the same command again.
    run = start(work, MASK)
    checkpoint = work / f"{MASK}.ckpt"
    wait_for(checkpoint, run)
    job = job_process(run, "mask.py")
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and everything in its process group
    job.kill()  # in case the job runs in a group of its own
    job.wait(timeout=30)
    run.wait(timeout=30)
    killed_at = checkpoint_step(checkpoint)
    assert 0 < killed_at < MASK_STEPS and not (work / MASK).exists()
    # Snakemake's lock outlives a killed run; the README says to remove it with --unlock, then rerun.
    subprocess.run(command(MASK, "--unlock"), cwd=work, check=True, capture_output=True, timeout=300)
    out = finish(start(work, MASK))
    assert re.search(r"^train_mask\s+1\s*$", out, re.M) and not re.search(r"^pretrain\s+\d+", out, re.M), out[-3000:]
    log = (work / "results/smoke/logs/addmul/fnn/seed0/main/mask_add.log").read_text()
    resumed = [int(s) for s in re.findall(r"resuming from checkpoint \S+mask_add\.pt\.ckpt at step (\d+)", log)]
    assert resumed == [killed_at], log
    assert not checkpoint.exists()

    # 3. Same network and mask as the run that was never interrupted, bit for bit (history included).
    finish(reference)
    ref = tmp_path / "reference"
    assert_identical(load(ref / NETWORK), load(work / NETWORK), "network.pt")
    assert_identical(load(ref / MASK), load(work / MASK), "mask_add.pt")
