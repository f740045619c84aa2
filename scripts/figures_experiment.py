"""Rule figures_experiment: an experiment's figures from its Parquet tables alone."""
import importlib
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import read_table  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
plots = importlib.import_module(f"modmask.plotting.{snakemake.wildcards.experiment}")
# every table with the columns the figures read, else an error naming the file and the column
tables = {name: read_table(path, plots.COLUMNS.get(name, ())) for name, path in snakemake.input.items()}
for path in plots.build_all(tables, snakemake.output[0]):
    log.info("wrote %s", path)
