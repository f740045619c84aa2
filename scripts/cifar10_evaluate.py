"""Rule cifar10_evaluate: one (architecture, seed)'s CIFAR-10 tables (thin entry point; logic in modmask.cifar_steps)."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import cifar_steps, runtime  # noqa: E402

log, device = runtime.start_job(snakemake.log[0], int(snakemake.wildcards.seed), snakemake.threads,
                                 snakemake.config["device"])
masks = {Path(p).stem[len("mask_"):]: p for p in snakemake.input.masks}
cifar_steps.evaluate(snakemake.input.network, masks, snakemake.input.data, device,
                     {name: path for name, path in snakemake.output.items()}, log, dict(snakemake.params.provenance))
