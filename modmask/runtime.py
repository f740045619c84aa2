"""Process-level set-up for jobs: seeding, threads, logging, the CPU allocator and the device (start_job)."""
from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import os
import platform
import random
import sys
from typing import TYPE_CHECKING

import numpy as np

from .devices import select_device

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that need it, so that jobs which only log (collect, figures) start
# without it.

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator() -> bool:
    """Keep large freed blocks in the process instead of returning them to the kernel (glibc only).

    Mask training allocates K x (number of weights) gradient tensors every step; with glibc's
    defaults each one is a fresh mmap whose pages are faulted in and zeroed again, which costs
    about as much as the masking itself. Returns whether the setting was applied.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data sampling."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _freeze_before_exit() -> None:
    # The interpreter's last garbage collection walks every object torch and pandas created (about 0.5-0.8 s
    # per job on a 2-core machine, most of a smoke job's own work); frozen objects are skipped, and nothing
    # else about the exit (atexit handlers, flushed logs, the exit status) changes.
    gc.freeze()


def get_logger(name: str = "modmask", log_file: str | os.PathLike | None = None) -> logging.Logger:
    """A logger writing to stderr (and to ``log_file``), with timestamps a person can follow.

    Every job script calls this first; it also makes the job's interpreter skip its final collection.
    """
    atexit.unregister(_freeze_before_exit)  # registered once however often the logger is asked for
    atexit.register(_freeze_before_exit)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr
               for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if log_file is not None:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def start_job(log_file=None, seed: int = 0, threads: int | None = None, device: str = "cpu"):
    """Logger, seeded RNGs, thread count, allocator and device for one job."""
    import torch

    log = get_logger("modmask", log_file)
    set_threads(threads)
    tune_cpu_allocator()
    seed_everything(seed)
    chosen = select_device(device)
    log.info("device %s, %d threads, seed %d", chosen, torch.get_num_threads(), seed)
    if os.environ.get("SLURM_JOB_ID"):  # which job and which of the node's GPUs SLURM gave it
        log.info("SLURM job %s on %s, CUDA_VISIBLE_DEVICES=%s", os.environ["SLURM_JOB_ID"],
                 os.environ.get("SLURMD_NODENAME", "?"), os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"))
    return log, chosen
