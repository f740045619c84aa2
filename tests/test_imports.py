"""What importing the library costs: the table jobs (collect, figures, summary) start without torch, whose
import alone takes 2-4 s on a small CPU machine, and the mask API needs no Snakemake."""
from __future__ import annotations

import subprocess
import sys

TABLE_MODULES = ["modmask.io", "modmask.runtime", "modmask.devices", "modmask.metrics", "modmask.summary",
                 "modmask.analysis.cifar10", "modmask.analysis.mathematics", "modmask.plotting.addmul",
                 "modmask.plotting.double_add", "modmask.plotting.sweeps", "modmask.plotting.histogram",
                 "modmask.plotting.permuted_mnist", "modmask.plotting.scan", "modmask.plotting.cifar10",
                 "modmask.plotting.mathematics"]


def _loaded_after(modules: list[str], *watched: str) -> dict[str, bool]:
    code = (f"import sys; import {', '.join(modules)}; "
            f"print(' '.join(str(name in sys.modules) for name in {list(watched)!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return dict(zip(watched, (flag == "True" for flag in result.stdout.split())))


def test_table_jobs_modules_import_without_torch():
    assert _loaded_after(TABLE_MODULES, "torch") == {"torch": False}
    # the control: a training job's modules do import it
    assert _loaded_after(["modmask.steps", "modmask.experiments.per_task"], "torch") == {"torch": True}


def test_the_mask_api_imports_without_snakemake():
    assert _loaded_after(["modmask", "modmask.masks", "modmask.masked_model", "modmask.training"],
                         "snakemake") == {"snakemake": False}


def test_a_job_freezes_its_objects_before_the_interpreter_exits_and_keeps_its_exit_status():
    # the probe is registered first, so it runs after the job's own handler (atexit runs last-in first-out)
    probe = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 1000)); "
             "from modmask import runtime; runtime.get_logger(); runtime.get_logger(); ")
    result = subprocess.run([sys.executable, "-c", probe + "sys.exit(3)"], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["frozen", "True"] and result.returncode == 3
    # an exception still fails the job
    result = subprocess.run([sys.executable, "-c", probe + "raise RuntimeError('boom')"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "RuntimeError: boom" in result.stderr
    # without the logger (the control) nothing is frozen
    result = subprocess.run([sys.executable, "-c", probe.split("from modmask")[0]], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["frozen", "False"]
