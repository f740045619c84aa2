"""Rule collect_table: concatenate one table over architectures and seeds."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import concat_parquet  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
df = concat_parquet(snakemake.input, snakemake.output[0])
log.info("wrote %s: %d rows from %d files", snakemake.output[0], len(df), len(snakemake.input))
