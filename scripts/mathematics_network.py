"""Rule mathematics_network: train a task's Transformer on every level (thin entry point; logic in modmask.mathematics_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import mathematics_steps, runtime  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
mathematics_steps.train_network(json.loads(snakemake.params.arch), json.loads(snakemake.params.settings),
                                snakemake.input.train, seed, device, snakemake.output.network, log,
                                dict(snakemake.params.provenance),
                                checkpoint_every=snakemake.config.get("checkpoint_every", 0))
