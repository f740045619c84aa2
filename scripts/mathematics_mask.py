"""Rule mathematics_mask: a control or easy-only mask on a task's network (thin entry point; logic in modmask.mathematics_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import mathematics_steps, runtime  # noqa: E402

seed = int(snakemake.wildcards.seed)
subset = snakemake.wildcards.math_mask
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
# Each mask gets its own noise and batch stream, derived from the run's seed.
mask_seed = seed * 1000 + sum(map(ord, subset))
mathematics_steps.train_mask(json.loads(snakemake.params.settings), subset, snakemake.input.network,
                             snakemake.input.train, mask_seed, device, snakemake.output.mask, log,
                             dict(snakemake.params.provenance),
                             checkpoint_every=snakemake.config.get("checkpoint_every", 0))
