"""Where the tests find the local data copies (they never download)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_data(name: str) -> Path:
    """``$MODMASK_DATA/<name>`` if set, else ``../shared/data/<name>`` beside the repository, else the
    machine-wide copy in /work/shared/data (for a clone that lives elsewhere)."""
    candidates = [REPO.parent / "shared" / "data" / name, Path("/work/shared/data") / name]
    if os.environ.get("MODMASK_DATA"):
        candidates.insert(0, Path(os.environ["MODMASK_DATA"]) / name)
    return next((c for c in candidates if c.exists()), candidates[0])
