"""Rule scan_evaluate: one (architecture, seed)'s SCAN tables (thin entry point; logic in modmask.scan_steps)."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime, scan_steps  # noqa: E402


def by_split(paths, prefix):
    """{split: path} from files named <prefix><split>.<ext>"""
    return {Path(p).stem[len(prefix):] if prefix else Path(p).parent.name: p for p in paths}


log, device = runtime.start_job(snakemake.log[0], int(snakemake.wildcards.seed), snakemake.threads,
                                 snakemake.config["device"])
scan_steps.evaluate(snakemake.input.network, by_split(snakemake.input.masks, "mask_"),
                    by_split(snakemake.input.direct, "network_"), by_split(snakemake.input.tests, ""), device,
                    {name: path for name, path in snakemake.output.items()}, log, dict(snakemake.params.provenance))
