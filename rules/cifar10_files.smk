# CIFAR-10's settings and files: what rules/cifar10.smk's DAG reads (constants, input functions).
from modmask.data import cifar10 as cifar_data_module
from modmask.experiments import cifar10 as cifar_experiment

CIFAR = config.get("cifar10")
CIFAR_TABLES = ["accuracy", "confusion"]
CIFAR_DIR = f"{RESULTS}/cifar10/{{arch}}/seed{{seed}}"
CIFAR_CACHE = f"{RESULTS}/data/cifar10/cifar10.pt"
# the control mask and one removal mask per class of `removed_classes` (all ten unless the config lists some)
CIFAR_MASKS = [cifar_experiment.CONTROL] + [
    cifar_experiment.without_mask_name(c)
    for c in ((config.get("cifar10") or {}).get("removed_classes") or cifar_experiment.CLASSES)
]


def cifar_mask_inputs(wildcards):
    """A mask job's inputs; a removal mask also needs the control mask, whose output layer it keeps."""
    run = CIFAR_DIR.format(arch=wildcards.arch, seed=wildcards.seed)
    inputs = {"data": CIFAR_CACHE, "network": f"{run}/network.pt"}
    if wildcards.cifar_mask != cifar_experiment.CONTROL:
        inputs["control_mask"] = f"{run}/mask_{cifar_experiment.CONTROL}.pt"
    return inputs


def cifar_stability_masks(wildcards):
    """Both masks of every class pair of one network (``<pair>_mask0.pt``, ``<pair>_mask1.pt``); the pairs
    are drawn from the network's seed."""
    run = CIFAR_DIR.format(arch=wildcards.arch, seed=wildcards.seed)
    pairs = cifar_experiment.class_pairs(CIFAR["stability"]["pairs"], int(wildcards.seed))
    return [f"{run}/stability/{'+'.join(pair)}_mask{s}.pt" for pair in pairs for s in (0, 1)]


def cifar_stability_tables(wildcards):
    """The stability table of every stability network."""
    arch = CIFAR["stability"]["architecture"]
    return [f"{RESULTS}/cifar10/{arch}/seed{seed}/stability.parquet" for seed in range(CIFAR["stability"]["networks"])]
