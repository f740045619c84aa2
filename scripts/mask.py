"""Rules that run an experiment's mask step (thin entry point: modmask.steps.run loads the job's inputs,
calls the experiment's step and saves what it returns)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import steps  # noqa: E402

steps.run(snakemake, "mask")
