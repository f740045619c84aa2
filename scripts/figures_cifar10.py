"""Rule figures_cifar10: paper Fig. 6a, 6b, 18 and 19-21 from the Parquet tables alone."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask.io import read_table  # noqa: E402
from modmask.analysis.cifar10 import COLUMNS  # noqa: E402
from modmask.plotting.cifar10 import build_all  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
# every table with the columns the figures read, else an error naming the file and the column
tables = {name: read_table(path, COLUMNS.get(name, ())) for name, path in snakemake.input.items()}
# ResNets are named by their depth (ResNet-110 at paper scale, smaller ones at quick and smoke scale).
names = {arch: f"ResNet-{spec.get('depth', 110)}" for arch, spec in snakemake.config["cifar10"]["architectures"].items()
         if spec["model"] == "resnet"}
for path in build_all(tables, snakemake.output[0], arch_names=names):
    log.info("wrote %s", path)
