"""Atomic file output, safe loading of saved tensors, Parquet tables with provenance, and code
versions for rerun triggers."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections import Counter, OrderedDict
from pathlib import Path, PurePath
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_UMASK_LOCK = threading.Lock()


class ArtefactError(RuntimeError):
    """A saved network, mask, checkpoint or data cache that cannot be loaded; the message names the file
    and what to do."""


class TableError(ValueError):
    """A table that lacks columns a rule reads; the message names the file and the columns."""


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere: set and restore at once, under a lock against our own threads
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A job killed half-way leaves a ``.tmp`` file, never something that looks like a finished output.
    The finished file gets the permissions an ordinary new file gets (0666 less the umask), not the
    owner-only 0600 of the temporary file, so that a group can read shared results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # the block may have replaced it with a folder
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# torch is imported where a function needs it: table jobs (collect, figures, summary) then start
# without it, about 1.5-2 s less per job.


def _plain_types() -> tuple:
    """What ``torch.load(weights_only=True)`` rebuilds without running code; ``save_torch`` writes nothing else."""
    import torch

    return (str, bytes, bytearray, bool, int, float, complex, type(None), torch.dtype, torch.device, torch.Size)


def plain_artefact(obj, where: str = "object"):
    """``obj`` made of what a ``weights_only`` load accepts: tensors, dicts, lists, tuples, sets, strings,
    numbers, None. NumPy scalars become Python numbers, NumPy arrays tensors, paths strings, subclasses
    of ``str``/``int``/``float`` (Snakemake's wildcards) the plain type; anything else is a TypeError that
    names where in ``obj`` it sits."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, _plain_types()):
        for base in (str, bytes, int, float):
            if isinstance(obj, base) and type(obj) is not base:
                return base(obj)
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        items = {plain_artefact(k, f"{where} key"): plain_artefact(v, f"{where}[{k!r}]") for k, v in obj.items()}
        if isinstance(obj, Counter):  # a MultiStepLR's milestones
            return Counter(items)
        if isinstance(obj, OrderedDict):
            out = OrderedDict(items)
            if hasattr(obj, "_metadata"):  # a state_dict's module versions
                out._metadata = plain_artefact(obj._metadata, f"{where}._metadata")
            return out
        return items
    if isinstance(obj, (list, tuple)):
        items = [plain_artefact(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, (set, frozenset)):
        return {plain_artefact(v, f"{where} item") for v in obj}
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which a safe (weights_only) "
                    f"load refuses; save tensors, dicts, lists, strings and numbers only")


def save_torch(obj, path) -> None:
    """Save ``obj`` atomically, made of plain types only (:func:`plain_artefact`), so that
    :func:`load_torch` reads it back without unpickling arbitrary objects."""
    import torch

    obj = plain_artefact(obj, f"the object for {path}")
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _reason(error: BaseException) -> str:
    """What went wrong in one line: for a weights_only refusal the part that says what was refused (not
    torch's advice to load the file unsafely), else the exception's first sentence."""
    text = str(error)
    for pattern in (r"unsupported GLOBAL (\S+)", r"Unsupported global: GLOBAL (\S+)"):
        found = re.search(pattern, text)
        if found:
            return f"it asks for {found.group(1).rstrip('.')}"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found:
        return found.group(1).strip()
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else "no details"
    return f"{type(error).__name__}: {first}"


def load_torch(path, map_location="cpu"):
    """A file written by :func:`save_torch`, loaded with ``weights_only=True``: nothing in it can run code.

    A file holding other objects (crafted, or written by other code) is refused, and a truncated or
    corrupt one stops, both with an :class:`ArtefactError` naming the file and what to do.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expected file {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 -- every failure gets the file's name and a remedy
        reason = _reason(error)
        if reason.startswith("it asks for"):
            raise ArtefactError(
                f"{path} was refused: it holds objects other than tensors and plain data ({reason}), which "
                f"loading would have to execute. modmask never writes such a file, so it is foreign or tampered "
                f"with: delete it (and find out where it came from); Snakemake then rebuilds it") from None
        raise ArtefactError(f"{path} is truncated or corrupt ({reason}), or was not written by modmask: delete it "
                            f"so that Snakemake rebuilds it with the job that writes it") from None


def load_checkpoint(path, log: logging.Logger):
    """A training checkpoint, or None when there is none or it cannot be loaded.

    A corrupt, truncated or refused checkpoint must not block its job forever: it is moved aside to
    ``<name>.corrupt`` (replacing an older one) with a warning naming it, and the job starts afresh.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = load_torch(path)
        if not isinstance(state, dict):
            raise ArtefactError(f"{path} is not a checkpoint (it holds a {type(state).__name__})")
    except ArtefactError as error:
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
            where = f"moved it to {aside}"
        except OSError:
            path.unlink(missing_ok=True)
            where = "deleted it"
        log.warning("ignoring checkpoint %s and starting afresh (%s): %s", path, where, error)
        return None
    return state


def with_provenance(df: pd.DataFrame, provenance: dict) -> pd.DataFrame:
    """``df`` with the provenance columns (seed, config hash, code version...) first."""
    df = df.copy()
    for key, value in reversed(list(provenance.items())):
        df.insert(0, key, value)
    return df


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


def missing_columns(df: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    return [c for c in dict.fromkeys(columns) if c not in df.columns]


def read_table(path, columns: Iterable[str] = (), allow_empty: bool = False) -> pd.DataFrame:
    """A Parquet table that has every one of ``columns`` (those its reader uses), else a :class:`TableError`
    naming the file and the missing columns, so that a figure or summary never draws from a column
    that is not there. ``allow_empty``: a table without rows (e.g. nothing to report) passes as it is."""
    df = read_parquet(path)
    missing = missing_columns(df, columns)
    if missing and not (allow_empty and df.empty):
        raise TableError(f"table {path} lacks column(s) {missing} that its reader uses (it has {list(df.columns)}); "
                         f"it was written by other code or is damaged: delete it so that Snakemake rebuilds it")
    return df


def concat_parquet(paths: Iterable, out_path) -> pd.DataFrame:
    """Concatenate tables (e.g. over seeds) into one, keeping each input's metadata in a list.

    Every input with rows must have the same columns: a column that some inputs lack would be read
    as missing values. Inputs without rows (a run with nothing to report) are kept whatever they hold.
    """
    paths = list(paths)
    frames = [read_parquet(p) for p in paths]
    union = list(dict.fromkeys(c for df in frames if not df.empty for c in df.columns))
    for path, df in zip(paths, frames):
        missing = missing_columns(df, union) if not df.empty else []
        if missing:
            others = [str(p) for p, other in zip(paths, frames) if not other.empty and missing[0] in other.columns]
            raise TableError(f"table {path} lacks column(s) {missing} that other tables of the same kind have "
                             f"(e.g. {others[0]}); it was written by other code or is damaged: delete it so that "
                             f"Snakemake rebuilds it")
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_parquet(df, out_path, {"sources": [str(p) for p in paths]})
    return df


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def stable_hash(obj, length: int = 12) -> str:
    """Short hash of a JSON-serialisable object (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]
