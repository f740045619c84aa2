"""Rule permuted_mnist_tables: the tidy tables over all runs (thin entry point; logic in modmask.steps)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import steps  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
steps.sequential_run_tables("permuted_mnist", list(snakemake.input), dict(snakemake.output.items()), log)
