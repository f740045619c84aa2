"""Rule cifar10_mask: the control mask or a class-removal mask (thin entry point; logic in modmask.cifar_steps)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import cifar_steps, runtime  # noqa: E402
from modmask.experiments import cifar10  # noqa: E402

seed = int(snakemake.wildcards.seed)
name = snakemake.wildcards.cifar_mask
removed = () if name == cifar10.CONTROL else (name[len("without_"):],)
# Each mask gets its own noise and batch stream: the control seed*1000, class c seed*1000 + c + 1.
mask_seed = seed * 1000 + (cifar10.class_index(removed[0]) + 1 if removed else 0)
log, device = runtime.start_job(snakemake.log[0], mask_seed, snakemake.threads, snakemake.config["device"])
cifar_steps.train_mask(json.loads(snakemake.params.settings), snakemake.input.network, snakemake.input.data, removed,
                       mask_seed, device, snakemake.output.mask, log, dict(snakemake.params.provenance),
                       control_path=snakemake.input.get("control"),
                       checkpoint_every=snakemake.config.get("checkpoint_every", 0))
