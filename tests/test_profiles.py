"""Profiles and per-job resources: what each job asks for comes from the config, and the default
profile makes Snakemake enforce the GPU limit on every local run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def dry_run(*args: str, check: bool = True) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", "--forceall", *args]  # whatever results/ holds
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, out[-4000:]
    return out


def job_resources(output: str, rule: str) -> list[dict]:
    """The ``resources:`` line of each planned job of ``rule``."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        if re.match(rf"(?:local)?rule {rule}:", block.strip()):
            line = re.search(r"resources: (.*)", block).group(1)
            jobs.append(dict(item.split("=", 1) for item in line.split(", ")))
    return jobs


def test_default_profile_sets_gpu_limit_retries_and_cores():
    profile = yaml.safe_load((REPO / "profiles/default/config.v8+.yaml").read_text())
    assert profile["resources"] == {"gpu": 2}
    assert profile["cores"] == "all" and profile["retries"] >= 1 and profile["keep-going"] is True
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.v8+.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["retries"] >= 1 and "resources" not in slurm


def test_paper_scale_jobs_ask_for_the_configured_resources(tmp_path):
    out = dry_run("results/paper/addmul/fnn/seed0/main/accuracy.parquet")
    assert "Using workflow specific profile profiles/default" in out  # read without being asked
    (pretrain,) = job_resources(out, "pretrain")
    assert (pretrain["runtime"], pretrain["mem_mb"], pretrain["gpu"]) == ("240", "16000", "1")
    masks = job_resources(out, "train_mask")
    assert len(masks) == 3 and all(m["gpu"] == "1" and m["runtime"] == "360" for m in masks)
    (data,) = job_resources(out, "generate_data")
    assert data["gpu"] == "0" and data["mem_mb"] == "8000"

    # a site's own config file overrides one stage, key by key; cpus become SLURM's cpus_per_task
    site = tmp_path / "site.yaml"
    site.write_text("resources:\n  mask: {runtime: 720, cpus: 8}\n")
    out = dry_run("results/paper/addmul/fnn/seed0/main/accuracy.parquet", "--configfile", "config/config.yaml",
                  str(site))
    mask = job_resources(out, "train_mask")[0]
    assert (mask["runtime"], mask["mem_mb"], mask["gpu"], mask["cpus_per_task"]) == ("720", "16000", "1", "8")


def test_cpu_scales_take_no_gpu():
    out = dry_run("results/smoke/addmul/fnn/seed0/main/accuracy.parquet", "--configfile", "config/smoke.yaml")
    for rule in ("pretrain", "train_mask", "evaluate"):
        jobs = job_resources(out, rule)
        assert jobs and all(j["gpu"] == "0" and j["runtime"] == "10" and j["mem_mb"] == "1000" for j in jobs), rule


def test_bad_resources_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources:\n  pretrain: {memory: 100}\n")
    out = dry_run("results/paper/addmul/fnn/seed0/network.pt", "--configfile", "config/config.yaml", str(bad),
                  check=False)
    assert "resources.pretrain" in out and "memory" in out


# Rules whose jobs train or evaluate networks: on a GPU cluster they ask for a device.
DEVICE_RULES = {"pretrain", "train_mask", "evaluate", "permuted_mnist_run", "scan_network", "scan_mask",
                "scan_evaluate", "cifar10_network", "cifar10_mask", "cifar10_stability_mask", "cifar10_stability",
                "cifar10_evaluate", "mathematics_network", "mathematics_mask", "mathematics_evaluate"}


def test_every_paper_job_asks_for_time_memory_and_the_right_device_count():
    """The whole paper DAG, planned: what tests/test_slurm.py checks on a part of it in a real SLURM run
    (that each job carries a time limit, memory and a GPU count from the config) holds for every rule."""
    out = dry_run("figures/all")
    rules = set(re.findall(r"^rule (\w+):", out, re.M))
    assert DEVICE_RULES <= rules, DEVICE_RULES - rules
    for rule in sorted(rules - {"mathematics_env"}):  # builds a local virtual environment, no resources
        jobs = job_resources(out, rule)
        assert jobs, rule
        for job in jobs:
            assert int(job["runtime"]) > 0 and int(job["mem_mb"]) >= 1000, (rule, job)
            assert job["gpu"] == ("1" if rule in DEVICE_RULES else "0"), (rule, job)
