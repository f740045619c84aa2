"""The workflow's steps for every experiment: a job's start (log, seed, threads, device), loading its
inputs, calling the experiment's step (:mod:`modmask.experiments`), saving what it returns in the one
network file format, as a mask file or as tables with their provenance columns.

The generic scripts (``scripts/network.py``, ``mask.py``, ``evaluate.py``) hand their Snakemake job to
:func:`run`: it reads the job into a :class:`Job` (plain dicts, no Snakemake types), loads its inputs
into an :class:`~modmask.experiments.Step` and calls the experiment's ``train_network``, ``train_mask``
or ``evaluate`` (or the step the rule names in ``params.step``). Permuted MNIST's run, the one
experiment with its own DAG, is at the end.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import experiments, runtime
from .io import load_checkpoint, load_torch, read_parquet, save_torch, stable_hash, with_provenance, write_parquet
from .masks import WeightMask

NETWORK_FORMAT = "modmask.Network/2"


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


def files_by_name(paths) -> dict:
    """{name: path} for the files of a list input: named by their stem without its leading ``mask_`` or
    ``network_`` (``mask_easy.pt`` -> ``easy``), or, where two or more stems are all the same, by their folder
    (``scan/length/test.parquet`` -> ``length``)."""
    paths = list(paths)
    stems = [Path(p).stem for p in paths]
    prefixed = [stem.split("_", 1)[1] for stem in stems if stem.split("_", 1)[0] in ("mask", "network") and "_" in stem]
    if len(prefixed) == len(stems):
        return dict(zip(prefixed, paths))
    if len(paths) > 1 and len(set(stems)) == 1:
        return {Path(p).parent.name: p for p in paths}
    return dict(zip(stems, paths))


def mask_seed(seed: int, name: str) -> int:
    """Each mask of a run gets its own noise and batch stream, derived from the run's seed and its name
    (an experiment may derive its own: ``mask_seed(seed, name)`` in its module)."""
    return seed * 1000 + sum(map(ord, name))


# stage -> the experiment's protocol step that runs it
STAGES = {"network": "train_network", "mask": "train_mask", "evaluate": "evaluate"}


def run(snakemake_job, stage: str) -> None:
    """Run one workflow job of ``stage`` (network, mask, evaluate): load its inputs, call the experiment's
    step (``params.step`` if the rule names one, else the stage's protocol step), save what it returns."""
    job = Job.from_snakemake(snakemake_job)
    exp = experiments.get(job.experiment)
    step_function = experiments.step_function(exp, job.params.get("step") or STAGES[stage])
    name = job.params.get("mask")
    seed = job.seed
    if stage == "mask":
        if not name:
            raise ValueError("a rule running scripts/mask.py names the mask it trains: set params.mask")
        seed = exp.mask_seed(job.seed, name) if hasattr(exp, "mask_seed") else mask_seed(job.seed, name)
    log, device = job.start(seed)
    step = load_step(job, exp, seed, device, log)
    if stage == "network":
        model, history, extra = step_function(step)
        save_network(job.output["network"], job.experiment, step.spec, model, history, job.provenance, **extra)
    elif stage == "mask":
        mask, history, extra = step_function(step)
        save_mask(job.output["mask"], mask, history, job.provenance, **extra)
    else:
        write_tables(step_function(step), job.output, job.provenance, log)


def _is_mask_input(name: str) -> bool:
    return name == "masks" or name.endswith("_mask")


def load_step(job: Job, exp, seed: int, device, log: logging.Logger) -> experiments.Step:
    """The job's inputs, loaded: ``network`` (the job's network), ``networks`` (further ones, by name),
    ``masks`` (by name) and ``<name>_mask`` (one mask, named ``<name>``) are networks and masks; every
    other input is data, read by the experiment's ``load_data`` (default: a Parquet table)."""
    read_data = getattr(exp, "load_data", read_parquet)
    step = experiments.Step(settings=job.json("settings") if "settings" in job.params else {}, seed=seed,
                            device=device, log=log, name=job.params.get("mask"), identity=str(job.provenance),
                            checkpoint_every=job.checkpoint_every)
    if "arch" in job.params:
        step.spec = job.json("arch")
    for name, value in job.input.items():
        if name == "network":
            step.network, step.network_file = load_network(value, job.experiment, device)
            step.spec = step.network_file["spec"]
        elif name == "networks":
            step.networks = {n: load_network(p, job.experiment, device)[0] for n, p in files_by_name(value).items()}
        elif name == "masks":
            step.masks.update({n: load_mask(p, device) for n, p in files_by_name(value).items()})
        elif _is_mask_input(name):
            step.masks[name[:-len("_mask")]] = load_mask(value, device)
        else:
            step.data[name] = ({n: read_data(p) for n, p in files_by_name(value).items()}
                               if isinstance(value, list) else read_data(value))
    outputs = [p for p in job.output.values() if isinstance(p, str)]
    if len(outputs) == 1 and outputs[0].endswith(".pt"):
        step.checkpoint_path = f"{outputs[0]}.ckpt"
    return step


# Settings that choose how a job computes, not what: left out of the config hash, so that a run may switch
# them midway and resume from its checkpoints (as it may move to another machine). ``kernels``: every
# choice samples the same masks; "fused" gives products and gradients equal to float32 rounding.
EXECUTION_SETTINGS = frozenset({"kernels"})


def method_settings(settings):
    """``settings`` without the execution settings (:data:`EXECUTION_SETTINGS`), at any depth."""
    if isinstance(settings, dict):
        return {key: method_settings(value) for key, value in settings.items() if key not in EXECUTION_SETTINGS}
    if isinstance(settings, (list, tuple)):
        return [method_settings(value) for value in settings]
    return settings


def provenance(experiment: str, scale: str, names: dict, seed: int, hashed: dict, code: str, **columns) -> dict:
    """The columns every table row of a job carries, in this order: experiment, scale, what names the run
    (``names``: arch, task or variant), seed, further ``columns``, config_hash (of ``hashed``: exactly the
    settings the job depends on, without the execution settings) and code_version (``code``, see
    modmask.code_versions)."""
    return {"experiment": experiment, "scale": scale, **names, "seed": int(seed), **columns,
            "config_hash": stable_hash(method_settings(hashed)), "code_version": code}


def run_provenance(experiment: str, block: dict, name_column: str, name: str, seed: int, stage: str, scale: str,
                   code: str, **columns) -> dict:
    """:func:`provenance` of a job of an experiment with its own config block (``block``), for the run
    ``name`` (its ``name_column``: arch, task or variant). The config hash covers exactly what the stage
    depends on: the run's settings (:func:`modmask.experiments.run_settings`), without the mask settings
    for a network job."""
    parts = experiments.run_settings(experiments.get(experiment), block, name)
    hashed = {part: value for part, value in parts.items() if not (stage == "network" and part == "mask")}
    return provenance(experiment, scale, {name_column: name}, seed, hashed, code, **columns)


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


# ---- an experiment with its own DAG (permuted MNIST): one job trains every task of a run in order ---------

def progress_identity(provenance: dict) -> str:
    """What a sequential run's saved progress must match to be resumed: its provenance without the code
    version (settings, scale, seed, variant)."""
    return str({key: value for key, value in provenance.items() if key != "code_version"})


def sequential_run(experiment: str, block: dict, variant: str, seed: int, device, out_path, log: logging.Logger,
                   provenance: dict, checkpoint_every: int = 0) -> None:
    """One (variant, seed) run of ``experiment`` (its module's ``run_data(data_block)`` and ``run(...)``):
    all tasks in order, resumable after each task and within one."""
    exp = experiments.get(experiment)
    # A paper-length run spans sessions, and the code may change between them (a refactor, a fix):
    # its progress belongs to the settings, seed and variant, and each task records the code version
    # that trained it, so the tables say which code produced each row.
    identity = progress_identity(provenance)
    progress_path = Path(f"{out_path}.ckpt")
    task_checkpoint = Path(f"{out_path}.task.ckpt") if checkpoint_every else None

    def save_progress(state):
        save_torch({"identity": identity, **state}, progress_path)

    def load_progress():
        state = load_checkpoint(progress_path, log)  # None also when it is corrupt: moved aside, start afresh
        if state is None:
            return None
        if state.get("identity") != identity:
            log.warning("ignoring %s: it belongs to different settings", progress_path)
            return None
        return state

    data = exp.run_data(block["data"], log)
    run = exp.run(block, variant, data, seed, device, log, identity=identity,
                             task_checkpoint_path=task_checkpoint, save_progress=save_progress,
                             load_progress=load_progress, checkpoint_every=checkpoint_every,
                             code_version=provenance.get("code_version", ""))
    save_torch({**run, "provenance": provenance}, out_path)
    if progress_path.exists():
        progress_path.unlink()


def sequential_run_tables(experiment: str, run_paths, out_paths: dict, log: logging.Logger) -> None:
    """The tables of ``out_paths`` (permuted MNIST: ``sharing``, ``layers``, ``accuracy``) over all runs
    (variants and seeds), from the module's ``tables(run, provenance)``."""
    exp = experiments.get(experiment)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in out_paths}
    for path in run_paths:
        run = load_torch(path)
        for name, df in exp.tables(run, run["provenance"]).items():
            if name in parts:
                parts[name].append(df)
    for name, path in out_paths.items():
        df = pd.concat(parts[name], ignore_index=True)
        write_parquet(df, path, {"sources": [str(p) for p in run_paths]})
        log.info("wrote %s (%d rows)", path, len(df))
