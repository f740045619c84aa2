"""Rule mathematics_data: one task's train and test tables from its generated shards or the official
release (thin entry point; logic in modmask.data.mathematics.write_task)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime  # noqa: E402
from modmask.data import mathematics  # noqa: E402

log, _ = runtime.start_job(snakemake.log[0], seed=0, threads=1, device="cpu")
data = json.loads(snakemake.params.settings)
shards = {level: list(snakemake.input[level]) for level in mathematics.LEVELS if level in snakemake.input.keys()}
mathematics.write_task(snakemake.wildcards.task, data, shards, snakemake.output.train, snakemake.output.test, log)
