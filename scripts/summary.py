"""Rule summary: the findings table (Markdown) from the Parquet tables."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import atomic_path  # noqa: E402
from modmask.summary import markdown  # noqa: E402

with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text(markdown(snakemake.config["results"]))
