"""Rule scan_network: train a sequence model on one SCAN split (thin entry point; logic in modmask.scan_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime, scan_steps  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
scan_steps.train_network(json.loads(snakemake.params.arch), json.loads(snakemake.params.settings),
                         snakemake.input.train, seed, device, snakemake.output.network, log,
                         dict(snakemake.params.provenance), checkpoint_every=snakemake.config.get("checkpoint_every", 0))
