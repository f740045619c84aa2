"""Rule figures_mathematics: paper Fig. 5 from the Parquet tables alone."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import read_table  # noqa: E402
from modmask.analysis.mathematics import COLUMNS  # noqa: E402
from modmask.plotting.mathematics import build_all  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
# every table with the columns the figures read, else an error naming the file and the column
tables = {name: read_table(path, COLUMNS.get(name, ())) for name, path in snakemake.input.items()}
for path in build_all(tables, snakemake.output[0]):
    log.info("wrote %s", path)
