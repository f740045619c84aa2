"""Statistics of binary masks, per layer and over the whole network (paper section 2 metrics)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import pandas as pd

if TYPE_CHECKING:  # masks import torch; table jobs (summary, figures) that only read TOTAL do not need it
    from .masks import BinaryMask

TOTAL = "total"


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def weights_kept(masks: Mapping[str, BinaryMask], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (mask, layer): weights kept, layer size, kept fraction; plus a ``total`` row per mask."""
    labels = labels or {}
    rows = []
    for mask_name, mask in masks.items():
        counts, sizes = mask.counts(), mask.sizes()
        for index, layer in enumerate(mask.names):
            rows.append({"mask": mask_name, "layer": layer, "layer_index": index,
                         "layer_label": labels.get(layer, layer), "kept": counts[layer], "size": sizes[layer],
                         "kept_fraction": _ratio(counts[layer], sizes[layer])})
        kept, size = sum(counts.values()), sum(sizes.values())
        rows.append({"mask": mask_name, "layer": TOTAL, "layer_index": len(mask.names), "layer_label": TOTAL,
                     "kept": kept, "size": size, "kept_fraction": _ratio(kept, size)})
    return pd.DataFrame(rows)


def shared_fraction(target: BinaryMask, others: list[BinaryMask]) -> dict[str, float]:
    """Per layer ``|m_t AND r| / |m_t|`` with ``r`` the union of the other masks; key ``total`` for the network."""
    from .masks import BinaryMask

    rest = BinaryMask.union(others)
    both = (target & rest).counts()
    own = target.counts()
    result = {layer: _ratio(both[layer], own[layer]) for layer in target.names}
    result[TOTAL] = _ratio(sum(both.values()), sum(own.values()))
    return result


def sharing_table(masks: Mapping[str, BinaryMask], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """For each mask, its per-layer shared fraction with the union of all the other masks given."""
    labels = labels or {}
    rows = []
    names = list(masks)
    for target in names:
        others = [masks[n] for n in names if n != target]
        if not others:
            raise ValueError("sharing needs at least two masks")
        fractions = shared_fraction(masks[target], others)
        for index, (layer, value) in enumerate(fractions.items()):
            rows.append({"mask": target, "layer": layer, "layer_index": index,
                         "layer_label": labels.get(layer, layer), "shared_fraction": value})
    return pd.DataFrame(rows)


def iou(a: BinaryMask, b: BinaryMask) -> float:
    """Intersection over union over all masked weights."""
    return _ratio((a & b).count(), (a | b).count())


def iomin(a: BinaryMask, b: BinaryMask) -> float:
    """Intersection over the smaller mask."""
    return _ratio((a & b).count(), min(a.count(), b.count()))


def pairwise_table(masks: Mapping[str, BinaryMask]) -> pd.DataFrame:
    """IoU and IoMin for every pair of masks."""
    names = list(masks)
    rows = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            rows.append({"mask_a": first, "mask_b": second, "iou": iou(masks[first], masks[second]),
                         "iomin": iomin(masks[first], masks[second])})
    return pd.DataFrame(rows)


def probability_histogram(masks: Mapping, bins: int = 100) -> pd.DataFrame:
    """Histogram of sigmoid(logit) over all masked weights of each trained mask (paper Fig. 7)."""
    import torch

    rows = []
    edges = torch.linspace(0, 1, bins + 1)
    for mask_name, mask in masks.items():
        values = torch.cat([torch.sigmoid(mask.logit(n).detach().float()).flatten().cpu() for n in mask.names])
        counts = torch.histc(values, bins=bins, min=0.0, max=1.0)
        for i in range(bins):
            rows.append({"mask": mask_name, "bin_left": float(edges[i]), "bin_right": float(edges[i + 1]),
                         "count": int(counts[i])})
    return pd.DataFrame(rows)
