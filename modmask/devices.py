"""Which device a job runs on.

Snakemake limits how many ``gpu=1`` jobs run at once but does not say which GPU each should use, so
two concurrent jobs on a two-GPU machine would both land on GPU 0. Each GPU job therefore takes an
exclusive lock file for one device and holds it until the process exits; the kernel releases the
lock even when the job is killed. Under SLURM (or any launcher that sets ``CUDA_VISIBLE_DEVICES`` to
the job's own devices) the first visible device is used as is.
"""
from __future__ import annotations

import fcntl
import getpass
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


_HELD_LOCKS: list = []  # keep lock files open for the life of the process


def default_lock_dir() -> Path:
    base = os.environ.get("MODMASK_GPU_LOCK_DIR")
    if base:
        return Path(base)
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = str(os.getuid())
    return Path(tempfile.gettempdir()) / f"modmask-gpu-locks-{user}"


def acquire_gpu_slot(devices: list[int], lock_dir: str | os.PathLike | None = None,
                     timeout: float = 3600.0, poll: float = 2.0) -> int:
    """Lock the first free device of ``devices`` and return it; wait while all are taken."""
    if not devices:
        raise ValueError("no GPU devices to choose from")
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for device in devices:
            handle = open(lock_dir / f"gpu{device}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _HELD_LOCKS.append(handle)
            return device
        if time.monotonic() > deadline:
            raise TimeoutError(f"all GPUs {devices} stayed busy for {timeout:.0f}s (locks in {lock_dir})")
        time.sleep(poll)


def release_gpu_slots() -> None:
    while _HELD_LOCKS:
        _HELD_LOCKS.pop().close()


def select_device(preference: str = "auto", lock_dir=None) -> torch.device:
    """``auto``: a free GPU when there is one, else the CPU. ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    import torch  # here, not at import: the table jobs that import this module's neighbours need no torch

    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"config asks for device {preference!r} but no CUDA device is available")
        if preference != "cuda":
            return torch.device(preference)
    elif preference != "auto":
        raise ValueError(f"unknown device {preference!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 1:
        return torch.device("cuda:0")
    return torch.device(f"cuda:{acquire_gpu_slot(list(range(count)), lock_dir)}")
