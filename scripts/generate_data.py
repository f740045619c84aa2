"""Rule generate_data: write an experiment's data set (thin entry point; logic in modmask.pipeline)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import pipeline  # noqa: E402

log, _ = pipeline.start_job(snakemake.log[0], seed=0, threads=1, device="cpu")
pipeline.generate_data(snakemake.wildcards.experiment, json.loads(snakemake.params.settings), 0,
                       snakemake.output[0], log)
