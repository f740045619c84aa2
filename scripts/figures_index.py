"""Rule figures_all: list every figure built (and the findings summary), one path per line."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import atomic_path  # noqa: E402

files = sorted(str(p) for item in snakemake.input for p in ([Path(item)] if Path(item).is_file() else
               Path(item).rglob("*")) if p.is_file() and not p.name.startswith("."))
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text("".join(f"{f}\n" for f in files))
