"""Rule download_cifar10: fetch the official archive, check its MD5, unpack atomically."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import cifar_steps  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
cifar_steps.download(Path(snakemake.output[0]).parent, log)
