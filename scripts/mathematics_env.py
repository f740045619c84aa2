"""Rule mathematics_env: build the Mathematics Dataset generator's virtual environment (thin entry point;
logic in modmask.generator_env.build_venv)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import runtime  # noqa: E402
from modmask import generator_env  # noqa: E402

log = runtime.get_logger("modmask", snakemake.log[0])
generator_env.build_venv(snakemake.input.requirements, snakemake.params.venv, snakemake.output.marker, log,
                       base_python=snakemake.params.base_python or None)
