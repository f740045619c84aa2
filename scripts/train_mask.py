"""Rule train_mask: train one mask on a frozen network (thin entry point; logic in modmask.pipeline)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import pipeline, runtime  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
settings = json.loads(snakemake.params.settings)
settings.setdefault("checkpoint_every", snakemake.config.get("checkpoint_every", 0))
# Each mask task of a run gets its own noise and batch stream, derived from the run's seed.
task_seed = seed * 1000 + sum(map(ord, snakemake.wildcards.task))
pipeline.train_task_mask(snakemake.wildcards.experiment, snakemake.wildcards.task, settings,
                         snakemake.input.network, snakemake.input.data, task_seed, device,
                         snakemake.output.mask, log, dict(snakemake.params.provenance),
                         checkpoint_path=snakemake.params.checkpoint)
