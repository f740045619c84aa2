"""What the workflow tests share: where the local data copies are (they never download), and a
copy of the workflow to run in."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_data(name: str) -> Path:
    """``$MODMASK_DATA/<name>`` if set, else ``../shared/data/<name>`` beside the repository, else the
    machine-wide copy in /work/shared/data (for a clone that lives elsewhere)."""
    candidates = [REPO.parent / "shared" / "data" / name, Path("/work/shared/data") / name]
    if os.environ.get("MODMASK_DATA"):
        candidates.insert(0, Path(os.environ["MODMASK_DATA"]) / name)
    return next((c for c in candidates if c.exists()), candidates[0])


def copy_workflow(destination: Path, names) -> Path:
    """Copy the repository entries ``names`` into ``destination`` (created if missing)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, destination / name)
    return destination
