"""Rule cifar10_stability: IoU of each class pair's two masks (thin entry point; logic in modmask.cifar_steps)."""
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the library lives beside the workflow
from modmask import cifar_steps  # noqa: E402
from modmask.runtime import get_logger  # noqa: E402

log = get_logger("modmask", snakemake.log[0])
pairs = defaultdict(list)
for path in sorted(snakemake.input):  # <pair>_mask0.pt, <pair>_mask1.pt
    pairs[Path(path).stem.rsplit("_mask", 1)[0]].append(path)
cifar_steps.stability(dict(pairs), snakemake.output[0], log, dict(snakemake.params.provenance))
