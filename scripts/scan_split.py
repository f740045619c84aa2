"""Rule scan_split: write one SCAN split's train and test tables (thin entry point; logic in modmask.data.scan)."""
import json
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime  # noqa: E402
from modmask.data import scan  # noqa: E402

log, _ = runtime.start_job(snakemake.log[0], seed=0, threads=1, device="cpu")
scan.write_split(snakemake.wildcards.split, json.loads(snakemake.params.settings), snakemake.output.train,
                 snakemake.output.test, log)
