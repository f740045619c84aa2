"""Rules collecting tables over architectures and seeds: each named output gets the inputs with its file name
(``accuracy.parquet`` from every run's ``accuracy.parquet``); a single unnamed output gets them all."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import concat_parquet  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
outputs = dict(snakemake.output.items()) or {"table": snakemake.output[0]}
for out in outputs.values():
    inputs = [p for p in snakemake.input if len(outputs) == 1 or Path(p).name == Path(out).name]
    df = concat_parquet(inputs, out)
    log.info("wrote %s: %d rows from %d files", out, len(df), len(inputs))
