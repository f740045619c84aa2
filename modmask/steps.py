"""What the workflow steps of every experiment share: provenance columns, the one network file format,
mask files, and tables written with their provenance.

The experiments' own steps (``pipeline`` for add/mul and double addition, ``scan_steps``, ``cifar_steps``,
``mathematics_steps``, ``transfer``) train and score; saving, loading and table writing happen here, so
that every experiment's files look alike and a file written by one experiment's rule cannot be read as
another's network.

The generic scripts (``scripts/network.py``, ``mask.py``, ``evaluate.py``) hand their Snakemake job to
:func:`run`: it reads the job into a :class:`Job` (plain dicts, no Snakemake types) and calls the
experiment's ``<stage>_job(job)`` in its steps module.
"""
from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import experiments, runtime
from .io import load_torch, save_torch, stable_hash, with_provenance, write_parquet
from .masks import WeightMask

NETWORK_FORMAT = "modmask.Network/2"
# experiment -> the module holding its ``<stage>_job`` functions
STEP_MODULES = {"addmul": "pipeline", "double_add": "pipeline", "scan": "scan_steps", "cifar10": "cifar_steps",
                "mathematics": "mathematics_steps"}


@dataclass
class Job:
    """One workflow job as plain data: named inputs and outputs (a path, or a list of paths), params
    (``settings`` and ``arch`` as JSON text, ``provenance`` as a dict), wildcards and where to log."""
    experiment: str
    wildcards: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    log_file: str | None = None
    threads: int = 1
    device: str = "cpu"
    checkpoint_every: int = 0

    @classmethod
    def from_snakemake(cls, job) -> "Job":
        params = dict(job.params.items())
        wildcards = dict(job.wildcards.items())
        experiment = params.get("experiment") or wildcards.get("experiment")
        if not experiment:
            raise ValueError("a rule running scripts/network.py, mask.py or evaluate.py names its experiment: set "
                             "params.experiment or use an {experiment} wildcard")
        return cls(experiment=experiment, wildcards=wildcards,
                   input=_named(job.input), output=_named(job.output), params=params,
                   log_file=job.log[0] if len(job.log) else None, threads=job.threads,
                   device=job.config.get("device", "cpu"), checkpoint_every=job.config.get("checkpoint_every", 0))

    @property
    def seed(self) -> int:
        return int(self.wildcards["seed"])

    @property
    def provenance(self) -> dict:
        return dict(self.params["provenance"])

    def json(self, name: str) -> dict:
        """A param written as JSON text (``settings``, ``arch``)."""
        return json.loads(self.params[name])

    def start(self, seed: int | None = None) -> tuple[logging.Logger, torch.device]:
        """Logger, seeded RNGs, threads and device for this job (seed: the run's, unless given)."""
        return runtime.start_job(self.log_file, self.seed if seed is None else seed, self.threads, self.device)


def _named(files) -> dict:
    return {name: value if isinstance(value, str) else list(value) for name, value in files.items()}


def files_by_name(paths, prefix: str) -> dict:
    """{name: path} for files named ``<prefix><name>.<ext>`` (``mask_easy.pt`` -> ``easy``)."""
    return {Path(p).stem[len(prefix):]: p for p in paths}


def network_step(job: Job, train_network, data: str = "train") -> None:
    """The network job of an experiment whose ``train_network(arch, settings, data_path, seed, device, out_path,
    log, provenance, checkpoint_every=)`` trains on the job's input ``data``."""
    log, device = job.start()
    train_network(job.json("arch"), job.json("settings"), job.input[data], job.seed, device, job.output["network"],
                  log, job.provenance, checkpoint_every=job.checkpoint_every)


def mask_seed(seed: int, name: str) -> int:
    """Each mask of a run gets its own noise and batch stream, derived from the run's seed and its name."""
    return seed * 1000 + sum(map(ord, name))


def run(snakemake_job, stage: str) -> None:
    """Run one workflow job: the experiment's ``<step>_job`` (``step``: ``params.step`` if the rule sets
    it, else ``stage``) in its steps module (:data:`STEP_MODULES`)."""
    job = Job.from_snakemake(snakemake_job)
    if job.experiment not in STEP_MODULES:
        raise ValueError(f"no workflow steps for experiment {job.experiment!r}; known: {sorted(STEP_MODULES)}")
    module = importlib.import_module(f"{__package__}.{STEP_MODULES[job.experiment]}")
    step = job.params.get("step") or stage
    if not hasattr(module, f"{step}_job"):
        raise ValueError(f"experiment {job.experiment!r} has no {step!r} step ({module.__name__}.{step}_job)")
    getattr(module, f"{step}_job")(job)


def provenance(experiment: str, scale: str, names: dict, seed: int, hashed: dict, code: str, **columns) -> dict:
    """The columns every table row of a job carries, in this order: experiment, scale, what names the run
    (``names``: arch, task or variant), seed, further ``columns``, config_hash (of ``hashed``: exactly the
    settings the job depends on) and code_version (``code``, see modmask.code_versions)."""
    return {"experiment": experiment, "scale": scale, **names, "seed": int(seed), **columns,
            "config_hash": stable_hash(hashed), "code_version": code}


def save_network(path, experiment: str, spec: dict, model: torch.nn.Module, history, provenance: dict,
                 **extra) -> None:
    """A trained network: its experiment, architecture spec, weights (on the CPU), training history and
    provenance, plus what the experiment needs to rebuild it (``extra``, e.g. a vocabulary)."""
    state = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    save_torch({"format": NETWORK_FORMAT, "experiment": experiment, "spec": spec, "state_dict": state,
                "history": history.rows, "provenance": provenance, **extra}, path)


def read_network(path, experiment: str) -> dict:
    """The contents of a network file of ``experiment`` (no code runs: see io.load_torch)."""
    data = load_torch(path)
    if not isinstance(data, dict) or data.get("format") != NETWORK_FORMAT or data.get("experiment") != experiment:
        found = (data.get("format"), data.get("experiment")) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a saved {experiment} network (format, experiment: {found}; expected "
                         f"{NETWORK_FORMAT!r}, {experiment!r}); delete it and re-run the rule that writes it")
    return data


def load_network(path, experiment: str, device="cpu") -> tuple[torch.nn.Module, dict]:
    """A saved network of ``experiment`` in eval mode on ``device``, and the file's contents. The
    experiment module rebuilds the architecture (experiments.network_from_file)."""
    data = read_network(path, experiment)
    model = experiments.network_from_file(experiments.get(experiment), data)
    model.load_state_dict(data["state_dict"])
    return model.to(device).eval(), data


def save_mask(path, mask: WeightMask, history, provenance: dict, **extra) -> None:
    """A trained mask (its logits), training history and provenance, plus ``extra`` (e.g. removed classes)."""
    save_torch({**mask.to_file_dict(), **extra, "history": history.rows, "provenance": provenance}, path)


def load_mask(path, device=None) -> WeightMask:
    return WeightMask.from_file_dict(load_torch(path), device=device)


def write_tables(tables: dict[str, pd.DataFrame], out_paths: dict, provenance: dict, log: logging.Logger) -> None:
    """Each table named in ``out_paths`` to its Parquet file, provenance columns first."""
    missing = set(out_paths) - set(tables)
    if missing:
        raise KeyError(f"evaluation produced no table for outputs {sorted(missing)}")
    for name, path in out_paths.items():
        write_parquet(with_provenance(tables[name], provenance), path, provenance)
        log.info("wrote %s (%d rows)", path, len(tables[name]))
