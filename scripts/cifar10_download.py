"""Rule download_cifar10: fetch the official archive, check its MD5, unpack atomically."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.data import cifar10 as cifar_data  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
folder = Path(snakemake.output[0]).parent
log.info("downloading CIFAR-10 into %s", folder)
cifar_data.download(folder)
