"""How long must a CIFAR-10 mask train? Accuracy and kept weights as the mask trains (issue 33).

On one pretrained network (a `cifar10_network` output), trains the control mask (all classes) and then
a mask without one class (its output layer fixed to the final control mask's, as the workflow does), and
every ``--every`` steps scores the thresholded mask on the full test set: overall accuracy, the removed
class's accuracy, and the fraction of weights kept. The table shows the shortest training at a given
beta and learning rate whose control stays within 2 points of the unmasked network and whose removal
mask has settled. Not run by pytest; a few tens of minutes at one thread.

    python benchmarks/cifar10_mask_length.py --network results/quick/cifar10/simple_cnn/seed0/network.pt \
        --data results/quick/data/cifar10/cifar10.pt --steps 8000 --every 1000 --out mask_length.parquet \
        --figures figures/cifar10_mask_length
    python benchmarks/cifar10_mask_length.py --plot probes.parquet --figures DIR   # several probes in one figure

Approximation: the removal mask's output layer is the control's after ``--steps`` steps, so its row at
step s is not exactly a removal mask trained s steps against a control trained s steps.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modmask import steps  # noqa: E402
from modmask.code_versions import code_version  # noqa: E402
from modmask.experiments import cifar10  # noqa: E402
from modmask.io import read_parquet, stable_hash, write_parquet  # noqa: E402
from modmask.plotting.cifar10 import save_mask_length_figure  # noqa: E402
from modmask.training import TrainSettings  # noqa: E402


def scores(model, mask, test, removed: str) -> dict:
    images, labels = test
    counts = cifar10.confusion_counts(labels, cifar10.predictions(model, mask, images, "cpu"))
    c = cifar10.class_index(removed)
    return {"accuracy": float(counts.diagonal().sum() / counts.sum()),
            "removed_class_accuracy": float(counts[c, c] / counts[c].sum())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", help="a cifar10_network output (network.pt)")
    parser.add_argument("--data", help="the cifar10_data image cache (cifar10.pt)")
    parser.add_argument("--removed", default="cat", help="the class the second mask is trained without")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--every", type=int, default=1000, help="steps between test-set scores")
    parser.add_argument("--beta", type=float, default=1e-4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mask-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="mask seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="Parquet table to write")
    parser.add_argument("--figures", help="folder for the figure mask_length.png/.pdf of the table")
    parser.add_argument("--plot", metavar="TABLE", help="only draw the figure of this table (probes concatenated)")
    args = parser.parse_args(argv)
    if args.plot:
        if not args.figures:
            parser.error("--plot needs --figures (the folder to write the figure into)")
        print("\n".join(map(str, save_mask_length_figure(read_parquet(args.plot), args.figures))))
        return
    missing = [f"--{name}" for name in ("network", "data", "out") if getattr(args, name) is None]
    if missing:
        parser.error(f"a probe needs {', '.join(missing)} (or --plot TABLE --figures DIR to draw a table)")
    cifar10.class_index(args.removed)  # a clear error for an unknown class before any work
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("mask_length")
    torch.set_num_threads(args.threads)
    # as the workflow's tables: a hash of this script and the modmask modules it imports, taken before the
    # run, so it names the code that ran
    code = code_version(__file__)

    model, network_file = steps.load_network(args.network, cifar10.NAME)
    cache = cifar10.load_data(args.data)
    train = (cache["train"]["images"], cache["train"]["labels"])
    test = (cache["test"]["images"], cache["test"]["labels"])
    settings = TrainSettings(steps=args.steps, lr=args.lr, beta=args.beta, mask_samples=args.mask_samples,
                             batch_size=args.batch_size, log_every=args.every, kernels="eager")
    unmasked = scores(model, None, test, args.removed)
    log.info("unmasked network: test accuracy %.4f, %s %.4f", unmasked["accuracy"], args.removed,
             unmasked["removed_class_accuracy"])

    rows = [{"mask": "none", "step": 0, "kept": 1.0, **unmasked, "seconds": 0.0}]
    control = None
    for name, removed in (("control", ()), (cifar10.without_mask_name(args.removed), (args.removed,))):
        started = time.perf_counter()

        def monitor(mask):
            return scores(model, mask.binary(), test, args.removed)

        mask, history = cifar10.train_class_mask(model, train, settings, cifar10.mask_seed(args.seed, name), "cpu",
                                                 log, removed=removed, fixed_output=control, monitor=monitor)
        seconds = time.perf_counter() - started
        for row in history.rows:
            rows.append({"mask": name, "step": row["step"], "kept": row["kept"], "accuracy": row["accuracy"],
                          "removed_class_accuracy": row["removed_class_accuracy"],
                          "seconds": seconds * row["step"] / args.steps})
        if control is None:
            control = mask  # the removal mask's output layer is fixed to this one

    # provenance as the workflow's tables carry it: the network's run (experiment, scale, arch, seed), the
    # hash of this probe's settings together with the network's, and the code
    made_by = network_file.get("provenance", {})
    probe = {"removed_class": args.removed, "steps": args.steps, "beta": args.beta, "lr": args.lr,
             "mask_samples": args.mask_samples, "batch_size": args.batch_size, "mask_seed": args.seed}
    table = pd.DataFrame(rows).assign(
        experiment=made_by.get("experiment", cifar10.NAME), scale=made_by.get("scale", "unknown"),
        arch=made_by.get("arch", "unknown"), seed=made_by.get("seed", -1), **probe, threads=args.threads,
        network_test_accuracy=network_file.get("test_accuracy", float("nan")),
        config_hash=stable_hash({"probe": probe, "network": made_by.get("config_hash")}),
        code_version=code)
    write_parquet(table, args.out)
    if args.figures:
        save_mask_length_figure(table, args.figures)
    log.info("wrote %s\n%s", args.out, table[["mask", "step", "kept", "accuracy", "removed_class_accuracy"]]
             .to_string(index=False))


if __name__ == "__main__":
    main()
