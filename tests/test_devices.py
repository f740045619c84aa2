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


def fake_gpus(monkeypatch, count):
    """Pretend this machine has ``count`` CUDA devices (no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_gives_each_concurrent_job_its_own_gpu(monkeypatch, tmp_path):
    # Locks are per open file, so two calls in one process behave like two jobs.
    fake_gpus(monkeypatch, 2)
    try:
        first = devices.select_device("auto", lock_dir=tmp_path)
        second = devices.select_device("auto", lock_dir=tmp_path)
        assert {first, second} == {torch.device("cuda:0"), torch.device("cuda:1")}
        with pytest.raises(TimeoutError):  # a third job waits while both are taken
            devices.acquire_gpu_slot([0, 1], tmp_path, timeout=0.3, poll=0.1)
        devices.release_gpu_slots()
        assert devices.select_device("auto", lock_dir=tmp_path) == torch.device("cuda:0")  # free again
    finally:
        devices.release_gpu_slots()


def test_one_visible_gpu_is_used_without_a_lock(monkeypatch, tmp_path):
    # Under SLURM (CUDA_VISIBLE_DEVICES set to the job's own GPU) each job sees one device.
    fake_gpus(monkeypatch, 1)
    assert devices.select_device("auto", lock_dir=tmp_path) == torch.device("cuda:0")
    assert not list(tmp_path.iterdir())


def test_many_concurrent_jobs_never_share_a_gpu(tmp_path):
    # Six jobs on two fake GPUs, each holding its GPU for a moment: jobs that overlap in time always
    # hold different devices, and every job gets one eventually.
    script = textwrap.dedent(f"""
        import importlib.util, sys, time, types
        sys.modules["torch"] = types.ModuleType("torch")  # the locking needs no torch: spare the slow import
        spec = importlib.util.spec_from_file_location("devices", {devices.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        device = module.acquire_gpu_slot([0, 1], {str(tmp_path / 'locks')!r}, timeout=60, poll=0.05)
        start = time.time()
        time.sleep(0.4)
        print(device, start, time.time(), flush=True)
    """)
    jobs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    spans = []
    for job in jobs:
        out, _ = job.communicate(timeout=120)
        assert job.returncode == 0
        device, start, end = out.split()
        spans.append((int(device), float(start), float(end)))
    assert {d for d, _, _ in spans} == {0, 1}
    for i, (d1, s1, e1) in enumerate(spans):
        for d2, s2, e2 in spans[i + 1:]:
            if s1 < e2 and s2 < e1:  # ran at the same time
                assert d1 != d2, spans
