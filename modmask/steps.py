"""What the workflow steps of every experiment share: provenance columns, the one network file format,
mask files, and tables written with their provenance.

The experiments' own steps (``pipeline`` for add/mul and double addition, ``scan_steps``, ``cifar_steps``,
``mathematics_steps``, ``transfer``) train and score; saving, loading and table writing happen here, so
that every experiment's files look alike and a file written by one experiment's rule cannot be read as
another's network.
"""
from __future__ import annotations

import logging

import pandas as pd
import torch

from . import experiments
from .io import load_torch, save_torch, stable_hash, with_provenance, write_parquet
from .masks import WeightMask

NETWORK_FORMAT = "modmask.Network/2"


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
