"""Rule pretrain: train one network (thin entry point; logic in modmask.pipeline)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import pipeline, runtime  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
settings = json.loads(snakemake.params.settings)
settings.setdefault("checkpoint_every", snakemake.config.get("checkpoint_every", 0))
pipeline.pretrain(snakemake.wildcards.experiment, json.loads(snakemake.params.arch), settings,
                  snakemake.input.data, seed, device, snakemake.output.network, log,
                  dict(snakemake.params.provenance), checkpoint_path=snakemake.params.checkpoint)
