"""Rule generate_data: write an experiment's data set (thin entry point; logic in modmask.data)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import data, runtime  # noqa: E402

log, _ = runtime.start_job(snakemake.log[0], seed=0, threads=1, device="cpu")
data.write_dataset(snakemake.wildcards.experiment, json.loads(snakemake.params.settings), 0, snakemake.output[0], log)
