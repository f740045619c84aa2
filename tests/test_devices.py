"""GPU slot assignment with fake device lists: concurrent jobs get different devices."""
import subprocess
import sys
import textwrap

import pytest
import torch

from modmask import devices


def test_two_jobs_get_different_devices(tmp_path):
    # The first job holds its lock in another process, as a concurrent Snakemake job would.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(devices.__file__.rsplit('/modmask/', 1)[0])!r})
        from modmask.devices import acquire_gpu_slot
        print(acquire_gpu_slot([0, 1], {str(tmp_path)!r}), flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        first = int(holder.stdout.readline())
        second = devices.acquire_gpu_slot([0, 1], tmp_path, timeout=1)
        assert {first, second} == {0, 1}
        with pytest.raises(TimeoutError):
            # both devices busy: this process already holds one and the other process the other
            devices.acquire_gpu_slot([first], tmp_path, timeout=0.5, poll=0.1)
    finally:
        holder.kill()
        holder.wait()
        devices.release_gpu_slots()


def test_lock_is_released_when_a_job_dies(tmp_path):
    job = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(devices.__file__.rsplit('/modmask/', 1)[0])!r})
        from modmask.devices import acquire_gpu_slot
        print(acquire_gpu_slot([0, 1], {str(tmp_path)!r}))
    """)], capture_output=True, text=True, check=True)
    assert job.stdout.strip() == "0"
    assert devices.acquire_gpu_slot([0, 1], tmp_path, timeout=1) == 0
    devices.release_gpu_slots()


def test_cpu_and_bad_preferences():
    assert devices.select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        devices.select_device("tpu")
    if not torch.cuda.is_available():
        assert devices.select_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            devices.select_device("cuda")
