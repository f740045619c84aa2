# Are Neural Nets Modular? -- the paper's experiments as one workflow.
#   snakemake figures/all --cores 8 --resources gpu=2                          (paper scale)
#   snakemake figures/all --cores 2 --configfile config/quick.yaml             (quick, CPU)
#   snakemake figures/all --cores 2 --configfile config/smoke.yaml             (smoke, tests)
# Targets go first: --resources and --configfile take several values.
from modmask.config import drop_disabled_entries, validate_config


configfile: "config/config.yaml"


report: "report/workflow.rst"


drop_disabled_entries(config)
validate_config(config)

RESULTS = config["results"]
FIGURES = "figures"


include: "rules/common.smk"
include: "rules/experiments.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/masks.smk"
include: "rules/evaluate.smk"
include: "rules/figures.smk"
include: "rules/permuted_mnist.smk"
include: "rules/scan.smk"
include: "rules/cifar10_files.smk"
include: "rules/cifar10.smk"
include: "rules/mathematics.smk"
