"""Rule figures_histogram: paper Fig. 7 from the histogram tables alone."""
import sys

import pandas as pd

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import read_table  # noqa: E402
from modmask.plotting.histogram import COLUMNS, build_all  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
table = pd.concat([read_table(path, COLUMNS["histogram"]) for path in snakemake.input], ignore_index=True)
for path in build_all(table, snakemake.output[0]):
    log.info("wrote %s", path)
