"""Rule cifar10_data: the uint8 image cache of CIFAR-10 (thin entry point; logic in modmask.data.cifar10)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.data import cifar10 as cifar_data  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
data = json.loads(snakemake.params.settings)
# Input: the batch files of an existing copy, the downloaded folder, or the JPEG archive.
source = Path(snakemake.input[0]).parent if data.get("cifar_dir") else snakemake.input[0]
cifar_data.prepare_data(data, source, Path(snakemake.output[0]).parent / "local", snakemake.output[0], log)
