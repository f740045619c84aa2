# Are Neural Nets Modular? -- the paper's experiments as one workflow.
#   snakemake --cores 8 --resources gpu=2 figures/all                          (paper scale)
#   snakemake --cores 2 --configfile config/quick.yaml figures/all             (quick, CPU)
#   snakemake --cores 2 --configfile config/smoke.yaml figures/all             (smoke, tests)
from modmask.config import validate_config


configfile: "config/config.yaml"


validate_config(config)

RESULTS = config["results"]
FIGURES = "figures"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/masks.smk"
include: "rules/evaluate.smk"
include: "rules/figures.smk"
