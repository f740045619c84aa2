"""Rule permuted_mnist_run: all tasks of one (variant, seed) (thin entry point; logic in modmask.steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime, steps  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
# the run's settings, and where MNIST lies (not part of the settings: it does not change the results)
block = {**json.loads(snakemake.params.settings), "data": snakemake.config["permuted_mnist"]["data"]}
steps.sequential_run("permuted_mnist", block, snakemake.wildcards.pm_variant, seed, device, snakemake.output.run, log,
                     dict(snakemake.params.provenance), checkpoint_every=snakemake.config.get("checkpoint_every", 0))
