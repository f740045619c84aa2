"""benchmarks/gpu_check.py, the prepared GPU check of issue 34: its CPU run at tiny size, and its arithmetic."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One CPU run at --size tiny (about 25 s on the 2-core machine): its JSON and its printed report."""
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu", "--out", str(out),
                           "--no-dag-check"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_tiny_run_checks_are_present_and_pass(tiny_run):
    data, _ = tiny_run
    assert data["format"] == gpu_check.FORMAT and data["size"] == "tiny" and data["device"]["type"] == "cpu"
    assert data["passed"] is True
    checks = {c["name"]: c for c in data["checks"]}
    expected = [
        "counter noise on the device == CPU, bit for bit",
        "P(b=1)=sigmoid(l) [eager, counter noise]",
        "P(b=1)=sigmoid(l) [eager, torch noise]",
        *(f"kernel vs CPU float64 reference [eager, {kind} noise, tau={tau}]"
          for kind in ("counter", "torch") for tau in ("1", "0.5")),
        *(f"vectorised pass == loop of K [{model}, eager, cpu]" for model in
          ("FNN 42-64-64-20", "Transformer seq2seq (time-major)", "simple CNN (grouped convolutions)")),
        *(f"cpu step == CPU step [{model}, eager]" for model in
          ("FNN 42-64-64-20", "Transformer seq2seq (time-major)", "simple CNN (grouped convolutions)")),
        "device locks: two concurrent jobs get distinct GPUs",
        "device locks: with one GPU the second job waits",
        "device locks: select_device('auto') in two concurrent jobs",
    ]
    for name in expected:
        assert name in checks, f"missing check {name!r}; have {sorted(checks)}"
        assert checks[name]["passed"] is True, checks[name]
    assert not [c for c in data["checks"] if c["passed"] is False]
    # the statistical check saw enough draws to mean something, and its numbers are recorded
    assert checks["P(b=1)=sigmoid(l) [eager, counter noise]"]["draws_per_logit"] >= 10000
    assert checks["P(b=1)=sigmoid(l) [eager, counter noise]"]["max_z"] <= gpu_check.PROB_MAX_Z
    # the second job really waited for the first
    wait = data["locks"]["wait"]
    assert wait["waited"] and wait["second"]["time"] >= wait["released"]["time"] - 0.01


def test_tiny_run_times_every_network(tiny_run):
    data, _ = tiny_run
    config = gpu_check.load_config(gpu_check.DEFAULT_CONFIG)
    cases = gpu_check.all_cases(config)
    assert {"addmul_fnn", "permuted_mnist", "scan_lstm", "scan_transformer", "mathematics", "cifar10_simple_cnn",
            "cifar10_resnet"} <= {name for name, case in cases.items() if case.required}
    assert set(data["models"]) == set(cases)
    for name, entry in data["models"].items():
        for phase in ("ordinary", "mask"):
            measured = entry[phase]
            assert "error" not in measured, (name, measured)
            assert measured["ms"] > 0 and measured["paper_ms"] > measured["ms"], (name, phase, measured)
            assert len(measured["ms_all"]) == data["settings"]["warmup"] + data["settings"]["reps"]
            # batch and K come from the paper-scale config, not from the script
            assert measured["paper_batch"] == int(cases[name].blocks[phase]["batch_size"])
            assert measured["resources"]["mem_mb"] and measured["resources"]["gpu"] == 1
        assert entry["mask"]["mask_samples"] == int(cases[name].blocks["mask"]["mask_samples"])
    assert data["models"]["mathematics"]["mask"]["mask_samples"] == 8  # the paper's K for the Mathematics Dataset
    assert data["models"]["addmul_fnn"]["mask"]["paper_batch"] == 128


def test_tiny_run_estimates_the_paper_scale(tiny_run):
    data, stdout = tiny_run
    estimate = data["estimate"]
    assert estimate["complete"] and estimate["slots"] == 1
    assert set(estimate["experiments"]) == {"addmul", "double_add", "permuted_mnist", "scan", "cifar10", "mathematics"}
    for name, entry in estimate["experiments"].items():
        assert entry["jobs"] > 0 and entry["steps"] > 0 and entry["job_hours"] > 0, name
    assert estimate["total_job_hours"] == pytest.approx(sum(e["job_hours"] for e in estimate["experiments"].values()))
    slack = 1 + 1e-9  # sums of the same durations in another order
    assert 0 < estimate["critical_path_hours"] <= estimate["wall_hours_lower_bound"] * slack
    assert estimate["wall_hours_lower_bound"] <= estimate["wall_hours_scheduled"] * slack
    # the printed report and --markdown carry the same tables, and say how the figures were extrapolated
    markdown = gpu_check.markdown_report(data)
    assert markdown in stdout
    assert "Tiny networks were timed, not the paper's" in markdown
    for entry in data["models"].values():
        assert f"| {entry['label']} |" in markdown


def test_job_hours_arithmetic_by_hand():
    jobs = [
        {"id": "p", "experiment": "a", "rule": "pretrain", "case": "net_a", "phase": "ordinary", "steps": 1000,
         "batch": 128, "after": None},
        {"id": "m1", "experiment": "a", "rule": "train_mask", "case": "net_a", "phase": "mask", "steps": 500,
         "batch": 128, "after": "p"},
        {"id": "m2", "experiment": "a", "rule": "train_mask", "case": "net_a", "phase": "mask", "steps": 500,
         "batch": 128, "after": "p"},
        {"id": "b", "experiment": "b", "rule": "scan_mask", "case": "net_b", "phase": "mask", "steps": 2000,
         "batch": 64, "after": None},
        {"id": "c", "experiment": "b", "rule": "scan_mask", "case": "net_c", "phase": "mask", "steps": 10,
         "batch": 64, "after": None},
    ]
    timings = {"net_a": {"ordinary": {"ms": 36.0, "batch": 128}, "mask": {"ms": 72.0, "batch": 128}},
               # measured at batch 32: 36 ms at the job's 64; plus 4 s of compiling in the first step
               "net_b": {"mask": {"ms": 18.0, "batch": 32, "startup_s": 4.0}}}
    result = gpu_check.estimate_costs(jobs, timings, slots=2, untimed={"evaluate": 3})
    a, b = result["experiments"]["a"], result["experiments"]["b"]
    # a: 1000 x 36 ms + 2 x 500 x 72 ms = 36 + 72 = 108 s
    assert a["job_hours"] == pytest.approx(108 / 3600)
    assert (a["jobs"], a["steps"], a["missing"]) == (3, 2000, {})
    # b: 2000 x 18 ms x 64 / 32 + 4 s = 76 s; net_c has no timing
    assert b["job_hours"] == pytest.approx(76 / 3600)
    assert (b["jobs"], b["missing"]) == (1, {"net_c": 1})
    assert result["total_job_hours"] == pytest.approx(184 / 3600)
    assert not result["complete"] and result["untimed_gpu_jobs"] == {"evaluate": 3}
    # longest chain: b alone (76 s) beats p -> m1 (36 + 36 s)
    assert result["critical_path_hours"] == pytest.approx(76 / 3600)
    assert result["wall_hours_lower_bound"] == pytest.approx(92 / 3600)  # max(184 s / 2, 76 s)
    # two GPUs: p (0-36) and b (0-76) start; m1 runs 36-72; m2 waits for a free GPU at 72 and ends at 108
    assert result["wall_hours_scheduled"] == pytest.approx(108 / 3600)
    assert gpu_check.estimate_costs(jobs, timings, slots=1)["wall_hours_scheduled"] == pytest.approx(184 / 3600)


def test_tiny_networks_are_extrapolated_with_the_paper_networks_flops():
    # a tiny step's time is per-step overhead; the paper network's FLOPs per example come on top
    phase = {"ms": 2.0, "batch": 16, "flops_ms_per_example": 0.5}
    assert gpu_check.paper_step_ms(phase, 128) == pytest.approx(2.0 + 0.5 * 128)
    job = {"phase": "mask", "steps": 1000, "batch": 128}
    assert gpu_check.job_seconds(job, {"mask": phase}) == pytest.approx(1000 * 66.0 / 1000)
    # the paper's network at a smaller batch: linear in the batch
    assert gpu_check.paper_step_ms({"ms": 10.0, "batch": 64}, 256) == pytest.approx(40.0)


@pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                    reason="snakemake is not installed")
def test_job_counts_match_the_snakemake_dag():
    config = gpu_check.load_config(gpu_check.DEFAULT_CONFIG)
    jobs, untimed = gpu_check.paper_jobs(config)
    dag = gpu_check.dag_job_counts(gpu_check.DEFAULT_CONFIG)
    assert isinstance(dag, dict), dag
    compared = gpu_check.compare_with_dag(jobs, untimed, dag)
    assert set(compared) == set(gpu_check.GPU_RULES)
    assert all(c["counted"] == c["dag"] for c in compared.values()), compared
