"""Rule evaluate: one run's evaluation tables (thin entry point; logic in modmask.pipeline)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import pipeline, runtime  # noqa: E402

log, device = runtime.start_job(snakemake.log[0], int(snakemake.wildcards.seed), snakemake.threads,
                                 snakemake.config["device"])
masks = {task: snakemake.input[task] for task in snakemake.params.tasks}
outputs = {name: path for name, path in snakemake.output.items()}
pipeline.evaluate(snakemake.wildcards.experiment, snakemake.input.network, masks, snakemake.input.data, device,
                  outputs, log, dict(snakemake.params.provenance))
