"""Rule cifar10_stability_mask: one mask without a class pair (thin entry point; logic in modmask.cifar_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import cifar_steps, runtime  # noqa: E402
from modmask.experiments import cifar10  # noqa: E402

seed = int(snakemake.wildcards.seed)
first, second = cifar_steps.pair_classes(snakemake.wildcards.pair)
# Distinct from the class-removal masks' seeds (seed*1000 + 0..10): 500 + 100 * mask_seed + pair.
mask_seed = (seed * 1000 + 500 + 100 * int(snakemake.wildcards.mask_seed)
             + 10 * cifar10.class_index(first) + cifar10.class_index(second))
log, device = runtime.start_job(snakemake.log[0], mask_seed, snakemake.threads, snakemake.config["device"])
cifar_steps.train_mask(json.loads(snakemake.params.settings), snakemake.input.network, snakemake.input.data,
                       (first, second), mask_seed, device, snakemake.output.mask, log,
                       dict(snakemake.params.provenance), checkpoint_every=snakemake.config.get("checkpoint_every", 0))
