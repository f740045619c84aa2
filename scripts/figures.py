"""Rules figures_*: one figure module's figures (PDF and PNG) from its Parquet tables alone.

params.plots names the module (modmask.plotting.<plots>); every named input is one table, given as one file
or as several files of the same table (concatenated); params.options (JSON) go to its build_all.
"""
import importlib
import json
import sys

import pandas as pd

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import read_table  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
plots = importlib.import_module(f"modmask.plotting.{snakemake.params.plots}")
options = json.loads(getattr(snakemake.params, "options", "{}"))
tables = {}
for name, files in snakemake.input.items():
    paths = [files] if isinstance(files, str) else list(files)
    # every table with the columns the figures read, else an error naming the file and the column
    parts = [read_table(path, plots.COLUMNS.get(name, ())) for path in paths]
    tables[name] = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
for path in plots.build_all(tables, snakemake.output[0], **options):
    log.info("wrote %s", path)
