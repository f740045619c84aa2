"""Data sets of the experiments: generation, encoding to tensors, and sampling of batches."""
from __future__ import annotations

import importlib
import logging

from ..io import write_parquet


def write_dataset(experiment: str, settings: dict, seed: int, out_path, log: logging.Logger) -> None:
    """Generate an experiment's data set (``data.<experiment>.generate_table``) and write it to Parquet."""
    module = importlib.import_module(f"{__name__}.{experiment}")
    df = module.generate_table(settings, seed)
    write_parquet(df, out_path, {"experiment": experiment, "settings": settings, "seed": seed})
    log.info("wrote %d rows to %s", len(df), out_path)
