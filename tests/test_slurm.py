"""The smoke-scale workflow on a real single-node SLURM cluster, through profiles/slurm.

The fixture brings up Debian's SLURM (slurmctld, slurmd, munged) with its configuration, state and
logs in a temporary folder, on ports of its own, with two fake GPUs declared as generic resources; it
stops only the daemons it started. It needs root (slurmd starts jobs as their user) and the packages
slurmctld, slurmd, slurm-client and munge (CI installs them in .ci/run); without them it skips and
says why. Each job costs a submission, status checks and two extra Snakemake start-ups: the whole smoke
DAG (219 jobs) took 19-23 minutes on a shared 2-core machine and about half of CI's time, so this test
builds two experiments' figures with one seed (22 jobs: data, networks, masks, evaluations, a local
table rule and figures; with two seeds, 35 jobs took about 514 s); tests/test_workflow.py runs every job locally, and tests/test_profiles.py checks what every
job of the paper-scale DAG asks SLURM for.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import test_workflow
from local_data import copy_workflow

# A part of the local smoke run in test_workflow.py: add/mul (GPU jobs for pretraining, masks and
# evaluation, a local table rule) and permuted MNIST (local MNIST files, one long GPU job per run).
FIGURES = {folder: test_workflow.FIGURES[folder] for folder in ("addmul", "permuted_mnist")}
WORKFLOW_FILES = list(dict.fromkeys([*test_workflow.WORKFLOW_FILES, "report", "profiles"]))
DAEMONS = ["munged", "slurmctld", "slurmd"]
CLIENTS = ["munge", "sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel"]
SBIN = ["/usr/sbin", "/usr/local/sbin", "/sbin"]


def _find(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def why_slurm_cannot_run() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: slurmd starts jobs as the submitting user"
    missing = [p for p in DAEMONS + CLIENTS if _find(p) is None]
    if missing:
        return (f"SLURM/munge programs not found: {', '.join(missing)} "
                "(apt-get install slurmctld slurmd slurm-client munge)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[int, int]:
    """CPUs and memory (MB) as slurmd sees them (``slurmd -C``)."""
    out = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    memory = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, memory


class Cluster:
    """One controller, one node with two fake GPUs, one partition; everything under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "etc" / "slurm.conf"
        self.socket = root / "run" / "munge.socket"
        self.bin = root / "bin"
        self.processes: list[subprocess.Popen] = []
        # The executor's job step runs `srun` with every SLURM_* variable removed, SLURM_CONF included,
        # so srun would look for /etc/slurm/slurm.conf; this shim points it at ours.
        path = os.pathsep.join([str(self.bin), os.environ.get("PATH", ""), *SBIN])
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def write_config(self) -> None:
        for sub in ("etc", "run", "state", "spool", "log", "munge", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        cpus, memory = _node_hardware()
        self.cpus = cpus
        r = self.root
        self.conf.write_text(f"""\
ClusterName=modmasktest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
PlugStackConfig={r}/etc/plugstack.conf
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# No accounting database: the executor asks squeue, which forgets a job MinJobAge after it ends.
MinJobAge=600
KillWait=5
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        # Two fake GPUs: any device files will do, SLURM only hands out their indices.
        (self.root / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu File=/dev/null\nNodeName={self.node} Name=gpu File=/dev/zero\n")
        (self.root / "etc" / "plugstack.conf").write_text("")
        shim = self.bin / "srun"
        shim.write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec {_find('srun')} \"$@\"\n")
        shim.chmod(0o755)

    def _start(self, *cmd: str) -> None:
        out = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "w")
        self.processes.append(subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def _wait(self, what: str, check, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} while waiting for {what}:\n"
                                       f"{self.logs()}")
            if check():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def run(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        r = self.root
        # munged wants the directory of its socket to be searchable by everyone
        (r / "run").chmod(0o755)
        self._start(_find("munged"), "--foreground", f"--key-file={r}/munge/munge.key", f"--socket={self.socket}",
                    f"--pid-file={r}/run/munged.pid", f"--log-file={r}/log/munged.log",
                    f"--seed-file={r}/munge/munged.seed")
        self._wait("munged", self.socket.exists)
        self._start(_find("slurmctld"), "-D", "-f", str(self.conf))
        self._wait("slurmctld", lambda: self.run("scontrol", "ping").returncode == 0
                   and "UP" in self.run("scontrol", "ping").stdout)
        self._start(_find("slurmd"), "-D", "-f", str(self.conf))
        self._wait("slurmd to register", lambda: self.node_state() not in ("", "unknown", "unknown*"))
        if self.node_state() not in ("idle", "mixed", "allocated"):
            self.run("scontrol", "update", f"nodename={self.node}", "state=resume")
        self._wait("the node to be idle", lambda: self.node_state() == "idle")

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-o", "%T").stdout.strip().lower()

    def stop(self) -> None:
        # Cancel what is left of our jobs (only this cluster's, via our SLURM_CONF), then our daemons.
        try:
            ids = self.run("squeue", "-h", "-o", "%i").stdout.split()
            if ids:
                self.run("scancel", *ids)
                deadline = time.monotonic() + 30
                while self.run("squeue", "-h", "-o", "%i").stdout.strip() and time.monotonic() < deadline:
                    time.sleep(1)
        except Exception:  # the controller may already be gone
            pass
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm(request):
    reason = why_slurm_cannot_run()
    if reason:
        print(f"\nSLURM test skipped: {reason}", file=sys.stderr)
        pytest.skip(f"SLURM test cannot run on this machine: {reason}")
    root = Path(tempfile.mkdtemp(prefix="modmask-slurm-"))
    root.chmod(0o755)
    cluster = Cluster(root)
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    request.addfinalizer(cluster.stop)
    cluster.write_config()
    cluster.start()
    return cluster


def test_slurm_gives_jobs_their_own_fake_gpu(slurm, tmp_path):
    out = tmp_path / "job.out"
    job = slurm.run("sbatch", "--parsable", "--gpus=1", "--mem=100", "-t", "1", "-o", str(out),
                    "--wrap", "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES", check=True).stdout.strip()
    deadline = time.monotonic() + 60
    while job in slurm.run("squeue", "-h", "-o", "%i").stdout.split() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert re.search(r"CUDA_VISIBLE_DEVICES=[01]$", out.read_text().strip()), out.read_text()


def test_smoke_workflow_through_the_slurm_profile(slurm, tmp_path):
    workdir = copy_workflow(tmp_path / "workflow", WORKFLOW_FILES)
    # device auto: the training and evaluation jobs ask SLURM for a GPU (and run on the CPU, where none is)
    settings = "device: auto\n"
    # one seed and the FNN only: every rule kind still runs (and two GPU jobs side by side, the permuted-MNIST
    # runs): 13 jobs instead of 18, each costing SLURM scheduling and status polling (~14 s a job here)
    settings += "experiments:\n  addmul:\n    seeds: 1\n    architectures: {lstm: null}\n"
    settings += test_workflow.LOCAL_DATA_SETTINGS.replace("permuted_mnist:\n", "permuted_mnist:\n  seeds: 1\n", 1)
    (workdir / "slurm_test.yaml").write_text(settings)
    cmd = [sys.executable, "-m", "snakemake", *(f"figures/{folder}" for folder in FIGURES),
           "--workflow-profile", "profiles/slurm",
           "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
           "--slurm-keep-successful-logs",
           "--configfile", "config/smoke.yaml", "slurm_test.yaml"]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, env=slurm.env, capture_output=True, text=True, timeout=2700)
    duration = time.perf_counter() - started
    output = result.stdout + result.stderr
    (tmp_path / "snakemake.txt").write_text(output)
    print(f"\nsmoke workflow through SLURM: {duration:.0f}s", file=sys.stderr)
    assert result.returncode == 0, f"{output[-6000:]}\n{slurm.logs()}"

    # Every job went through sbatch except the declared local rule that concatenates tables.
    total = int(re.findall(r"(\d+) of \1 steps \(100%\) done", output)[-1])
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    local = re.findall(r"^localrule (\w+):", output, re.M)
    assert set(local) == {"collect_tables"}, set(local)
    assert len(submitted) == total - len(local), f"{len(submitted)} SLURM jobs for {total} workflow jobs"

    # The figures came out.
    for folder, stems in FIGURES.items():
        built = sorted(p.name for p in (workdir / "figures" / folder).iterdir() if not p.name.startswith("."))
        assert built == sorted(f"{s}.{ext}" for s in stems for ext in ("pdf", "png")), folder
    assert all((workdir / "figures" / folder / f"{stem}.{ext}").stat().st_size > 1000
               for folder, stems in FIGURES.items() for stem in stems for ext in ("pdf", "png"))

    # GPU jobs ran inside SLURM jobs that were given one of the node's two fake GPUs; others got none.
    logs = workdir / "results" / "smoke" / "logs"
    gpu_logs = [log for name in ("pretrain.log", "mask_*.log", "evaluate.log", "run.log") for log in logs.rglob(name)]
    assert any(log.name == "run.log" for log in gpu_logs) and any(log.name == "pretrain.log" for log in gpu_logs)
    devices = set()
    for log in gpu_logs:
        match = re.search(r"SLURM job (\d+) on \S+, CUDA_VISIBLE_DEVICES=(\S+)", log.read_text())
        assert match, f"{log} has no SLURM job line"
        assert match.group(1) in submitted
        devices.add(match.group(2))
    assert devices <= {"0", "1"} and devices, devices
    data_log = (logs / "data" / "addmul.log").read_text()
    assert "SLURM job" in data_log
    if slurm.cpus >= 2:  # GPU jobs ran side by side, so SLURM handed out both devices
        assert devices == {"0", "1"}, devices

    # The job steps asked for the resources from the config: smoke's 10 minutes per job.
    job_limits = slurm.run("scontrol", "show", "job", "-o").stdout
    assert re.search(r"TimeLimit=00:10:00", job_limits), job_limits[:2000]
