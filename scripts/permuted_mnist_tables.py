"""Rule permuted_mnist_tables: the tidy tables over all runs (thin entry point; logic in modmask.transfer)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import transfer  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
transfer.permuted_mnist_tables(list(snakemake.input), dict(snakemake.output.items()), log)
