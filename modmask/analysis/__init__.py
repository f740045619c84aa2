"""The numbers behind the figures and the summary, computed from the tidy Parquet tables.

Pure table arithmetic (pandas), no drawing: ``modmask.plotting`` draws these numbers, ``modmask.summary``
writes them beside the paper's.
"""
from __future__ import annotations

import pandas as pd


def mean_std(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of ``value`` for each group."""
    grouped = df.groupby(by, sort=False)[value]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out
