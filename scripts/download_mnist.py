"""Rule download_mnist: fetch one MNIST archive and verify its checksums (logic in modmask.data.mnist)."""
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.data import mnist  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
out = Path(snakemake.output[0])
mnist.download(out.parent, out.name, snakemake.params.url)
log.info("downloaded and verified %s", out)
