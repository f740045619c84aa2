"""Rule cifar10_network: train a CNN on all classes (thin entry point; logic in modmask.cifar_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import cifar_steps, runtime  # noqa: E402

seed = int(snakemake.wildcards.seed)
log, device = runtime.start_job(snakemake.log[0], seed, snakemake.threads, snakemake.config["device"])
cifar_steps.train_network(json.loads(snakemake.params.arch), json.loads(snakemake.params.settings),
                          snakemake.input.data, seed, device, snakemake.output.network, log,
                          dict(snakemake.params.provenance), checkpoint_every=snakemake.config.get("checkpoint_every", 0))
