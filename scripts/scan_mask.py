"""Rule scan_mask: a mask on the IID-pretrained network for one split (thin entry point; logic in modmask.scan_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime, scan_steps  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
# Each split's mask gets its own noise and batch stream, derived from the run's seed.
mask_seed = seed * 1000 + sum(map(ord, snakemake.wildcards.split))
scan_steps.train_mask(json.loads(snakemake.params.settings), snakemake.input.network, snakemake.input.train,
                      mask_seed, device, snakemake.output.mask, log, dict(snakemake.params.provenance),
                      checkpoint_every=snakemake.config.get("checkpoint_every", 0))
