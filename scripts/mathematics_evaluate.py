"""Rule mathematics_evaluate: one (task, seed)'s accuracy table (thin entry point; logic in modmask.mathematics_steps)."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import mathematics_steps, runtime  # noqa: E402

log, device = runtime.start_job(snakemake.log[0], int(snakemake.wildcards.seed), snakemake.threads,
                                 snakemake.config["device"])
masks = {Path(path).stem[len("mask_"):]: path for path in snakemake.input.masks}
mathematics_steps.evaluate(snakemake.input.network, masks, snakemake.input.test, device, snakemake.output.accuracy,
                           log, dict(snakemake.params.provenance))
