"""Atomic file output, Parquet tables with provenance, and code versions for rerun triggers."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

PACKAGE_ROOT = Path(__file__).resolve().parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A job killed half-way leaves a ``.tmp`` file, never something that looks like a finished output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_torch(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path, map_location="cpu"):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expected file {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=False)


def write_parquet(df: pd.DataFrame, path, metadata: dict | None = None) -> None:
    """Write a table atomically; ``metadata`` (JSON-serialisable) goes into the file's schema."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata({**existing, b"modmask": json.dumps(metadata, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expected table {path} does not exist")
    return pd.read_parquet(path)


def read_parquet_metadata(path) -> dict:
    raw = (pq.read_schema(path).metadata or {}).get(b"modmask")
    return json.loads(raw) if raw else {}


def concat_parquet(paths: Iterable, out_path) -> pd.DataFrame:
    """Concatenate tables (e.g. over seeds) into one, keeping each input's metadata in a list."""
    paths = list(paths)
    frames = [read_parquet(p) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_parquet(df, out_path, {"sources": [str(p) for p in paths]})
    return df


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def stable_hash(obj, length: int = 12) -> str:
    """Short hash of a JSON-serialisable object (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def code_version(*modules: str, length: int = 12) -> str:
    """Hash of the source of library modules (``"masked_model"``, ``"data"``...).

    Rules put this into ``params`` so that editing the library code a rule uses re-runs that rule,
    and only that rule: Snakemake does not see changes inside imported packages by itself.
    A module name may be a subpackage; then all its ``.py`` files count.
    """
    digest = hashlib.sha256()
    for module in sorted(set(modules)):
        target = PACKAGE_ROOT / module.replace(".", "/")
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
        if not files or not files[0].exists():
            raise FileNotFoundError(f"no library module {module!r} under {PACKAGE_ROOT}")
        for f in files:
            digest.update(str(f.relative_to(PACKAGE_ROOT)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:length]
