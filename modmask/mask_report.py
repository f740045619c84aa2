"""How settled a trained mask is, per masked parameter.

The final mask keeps a weight when its logit is above 0, but during training every weight is kept with
probability sigmoid(logit). While many logits still sit near 0, thresholding turns a group of weights
each kept 40% of the time into none of them and one kept 60% of the time into all, so the final mask can
behave unlike every sample it was trained as (SCAN's LSTM after 2.5k mask steps: samples solve 91-99%
of the training set, the thresholded mask 45%; the quick Transformer's masks, with 15% of their logits
near 0, lose little). This report shows how many logits are undecided, so that a low score of the final
mask can be told apart from a mask that never fitted. A mask trained with sharpening (TrainSettings'
``sharpen_scale`` c) was last sampled with P(keep) = sigmoid(c * logit): judge it with ``--band 1/c``.

    python -m modmask.mask_report results/quick/scan/lstm/seed0/mask_simple.pt
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from .io import load_torch
from .masks import WeightMask

TOTAL = "(all)"


def logit_summary(mask: WeightMask, band: float = 1.0) -> pd.DataFrame:
    """One row per masked parameter and a total row ``(all)``.

    Columns: ``weights``, ``kept_fraction`` (logit > 0, the final mask), ``expected_kept_fraction``
    (mean sigmoid(logit): what a training sample keeps on average) and ``undecided_fraction``
    (|logit| < ``band``; for band 1, keep probabilities between 0.27 and 0.73).
    """
    if band <= 0:
        raise ValueError(f"band must be positive, got {band}")
    final = mask.binary()
    kept, sizes = final.counts(), final.sizes()
    probabilities = mask.probabilities()
    rows = [(name, sizes[name], kept[name], float(probabilities[name].double().sum()),
             int((logits.detach().abs() < band).sum())) for name, logits in mask.items()]
    table = pd.DataFrame(rows, columns=["parameter", "weights", "kept", "expected_kept", "undecided"])
    table.loc[len(table)] = [TOTAL, *table[["weights", "kept", "expected_kept", "undecided"]].sum()]
    table["weights"] = table["weights"].astype("int64")
    for column in ["kept", "expected_kept", "undecided"]:
        table[f"{column}_fraction"] = table[column] / table["weights"]
    return table[["parameter", "weights", "kept_fraction", "expected_kept_fraction", "undecided_fraction"]]


def settled_warning(summary: pd.DataFrame, limit: float = 0.05, band: float = 1.0) -> str | None:
    """A message when more than ``limit`` of all logits are undecided, else None."""
    total = summary.set_index("parameter").loc[TOTAL]
    if total["undecided_fraction"] <= limit:
        return None
    return (f"{total['undecided_fraction']:.1%} of the logits lie within ±{band:g} of 0 (limit {limit:.0%}): "
            f"the thresholded mask keeps {total['kept_fraction']:.1%} of the weights, a training sample "
            f"{total['expected_kept_fraction']:.1%} on average, but not the same ones, so it may score below "
            f"the training loss. If it does, sharpen it (mask settings sharpen_fraction, sharpen_scale).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modmask.mask_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("mask", help="a saved WeightMask (.pt), e.g. a mask_<split>.pt of the SCAN workflow")
    parser.add_argument("--band", type=float, default=1.0, help="|logit| below this counts as undecided")
    parser.add_argument("--limit", type=float, default=0.05, help="warn above this undecided fraction")
    args = parser.parse_args(argv)
    try:
        mask = WeightMask.from_file_dict(load_torch(args.mask))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {args.mask}: {error}", file=sys.stderr)
        return 2
    summary = logit_summary(mask, args.band)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    warning = settled_warning(summary, args.limit, args.band)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
