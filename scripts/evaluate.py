"""Rules that run an experiment's evaluate step (thin entry point: modmask.steps.run calls the experiment's
evaluate_job, or the step the rule names in params.step)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import steps  # noqa: E402

steps.run(snakemake, "evaluate")
