"""The real workflow through Snakemake at smoke scale, in a temporary copy of the repository."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = ["Snakefile", "rules", "scripts", "config", "envs", "modmask"]


def snakemake(workdir: Path, *args: str, extra_config: Path | None = None, check: bool = True):
    """Run Snakemake at smoke scale; ``extra_config`` overrides on top of config/smoke.yaml."""
    configs = ["config/smoke.yaml"] + ([str(extra_config)] if extra_config else [])
    # --configfile takes several files, so it goes last, after the targets.
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", *configs]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the job-stats table of a dry run."""
    text = result.stdout + result.stderr
    counts = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, workdir / name)
    snakemake(workdir, "figures/all")
    return workdir


def test_smoke_run_builds_every_addmul_figure(workflow):
    figures = sorted(p.name for p in (workflow / "figures" / "addmul").iterdir() if not p.name.startswith("."))
    stems = ["fig01_sharing_per_layer", "fig10_accuracy_masks_inverted", "fig11_weights_per_layer",
             "fig12_operation_confusion"]
    assert figures == sorted(f"{s}.{ext}" for s in stems for ext in ("pdf", "png"))
    listed = (workflow / "figures" / "all").read_text().split()
    assert len(listed) == 8 and all((workflow / p).stat().st_size > 1000 for p in listed)


def test_tables_are_tidy_with_provenance(workflow):
    results = workflow / "results" / "smoke" / "addmul"
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    # 2 architectures x 2 seeds x (no mask + 3 masks x 2 inversions) x 2 operations x 1 split
    assert len(accuracy) == 2 * 2 * 7 * 2
    assert set(accuracy["arch"]) == {"fnn", "lstm"} and set(accuracy["seed"]) == {0, 1}
    for column in ("experiment", "scale", "config_hash", "code_version"):
        assert accuracy[column].notna().all()
    assert accuracy["accuracy"].between(0, 1).all()
    confusion = pd.read_parquet(results / "confusion.parquet")
    sums = confusion.groupby(["arch", "seed", "mask", "inverted", "operation"])["fraction"].sum()
    assert sums.sub(1.0).abs().max() < 1e-9
    layers = pd.read_parquet(results / "layers.parquet")
    fnn_total = layers[(layers.arch == "fnn") & (layers.layer == "total") & (layers.seed == 0)]
    # smoke FNN 42-32-32-20: 42*32 + 32*32 + 32*20 masked weights (biases not masked)
    assert set(fnn_total["size"]) == {42 * 32 + 32 * 32 + 32 * 20}
    sharing = pd.read_parquet(results / "sharing.parquet")
    assert set(sharing["mask"]) == {"add", "mul"} and sharing["shared_fraction"].between(0, 1).all()


def test_every_job_wrote_a_log(workflow):
    logs = list((workflow / "results" / "smoke" / "logs").rglob("*.log"))
    # data + 2x2 pretrain + 2x2x3 masks + 2x2 evaluate + 4 collect + 2 figure rules
    assert len(logs) == 1 + 4 + 12 + 4 + 4 + 2
    mask_log = (workflow / "results/smoke/logs/addmul/fnn/seed0/main/mask_add.log").read_text()
    assert "mask step 20/20" in mask_log


def test_second_run_does_nothing(workflow):
    result = snakemake(workflow, "figures/all", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_mask_setting_reruns_only_masks_and_downstream(workflow, tmp_path):
    override = tmp_path / "beta.yaml"
    override.write_text("experiments:\n  addmul:\n    mask:\n      beta: 2.0e-4\n")
    result = snakemake(workflow, "figures/all", "--dry-run", extra_config=override)
    jobs = planned_jobs(result)
    assert jobs.get("train_mask") == 12 and jobs.get("evaluate") == 4
    assert "pretrain" not in jobs and "generate_data" not in jobs


def test_changing_plotting_code_reruns_only_figures(workflow):
    plotting = workflow / "modmask" / "plotting" / "addmul.py"
    original = plotting.read_text()
    try:
        plotting.write_text(original + "\n# an edit\n")
        jobs = planned_jobs(snakemake(workflow, "figures/all", "--dry-run"))
        assert jobs == {"figures_addmul": 1, "figures_all": 1}
    finally:
        plotting.write_text(original)


def test_bad_config_stops_with_the_key_named(workflow, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  addmul:\n    mask:\n      lr: -0.5\n")
    result = snakemake(workflow, "figures/all", "--dry-run", extra_config=bad, check=False)
    assert result.returncode != 0
    assert "experiments.addmul.mask.lr" in result.stdout + result.stderr


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
