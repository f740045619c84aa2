"""Mask statistics against hand-computed values."""
import math

import torch

from modmask.masks import BinaryMask
from modmask.metrics import iomin, iou, pairwise_table, shared_fraction, sharing_table, weights_kept


def mask(**layers):
    return BinaryMask({name: torch.tensor(bits, dtype=torch.bool) for name, bits in layers.items()})


A = mask(l1=[1, 1, 0, 0], l2=[1, 0, 0])
B = mask(l1=[1, 0, 1, 0], l2=[1, 1, 1])
C = mask(l1=[0, 1, 0, 0], l2=[0, 0, 0])


def test_weights_kept_per_layer_and_total():
    table = weights_kept({"a": A}, {"l1": "first"}).set_index("layer")
    assert table.loc["l1", "kept"] == 2 and table.loc["l1", "size"] == 4 and table.loc["l1", "layer_label"] == "first"
    assert table.loc["l2", "kept_fraction"] == 1 / 3
    assert table.loc["total", "kept"] == 3 and table.loc["total", "size"] == 7


def test_shared_fraction_uses_union_of_the_others():
    shared = shared_fraction(A, [B, C])
    # l1: A = {0, 1}, B|C = {0, 1, 2} -> 2/2; l2: A = {0}, B|C = {0, 1, 2} -> 1/1
    assert shared == {"l1": 1.0, "l2": 1.0, "total": 1.0}
    shared_b = shared_fraction(B, [A])
    # l1: B = {0, 2}, A = {0, 1} -> 1/2; l2: B = {0, 1, 2}, A = {0} -> 1/3; total 2/5
    assert shared_b == {"l1": 0.5, "l2": 1 / 3, "total": 2 / 5}


def test_sharing_table_rows():
    table = sharing_table({"a": A, "b": B}).set_index(["mask", "layer"])["shared_fraction"]
    assert table[("b", "total")] == 2 / 5 and table[("a", "l1")] == 0.5


def test_iou_and_iomin():
    # A & B: l1 {0}, l2 {0} -> 2; A | B: l1 {0,1,2}, l2 {0,1,2} -> 6
    assert iou(A, B) == 2 / 6
    assert iomin(A, B) == 2 / 3  # min(|A| = 3, |B| = 5)
    assert iou(A, A) == 1.0
    empty = mask(l1=[0, 0, 0, 0], l2=[0, 0, 0])
    assert math.isnan(iou(empty, empty))
    pairs = pairwise_table({"a": A, "b": B, "c": C})
    assert len(pairs) == 3 and pairs.iloc[0]["iou"] == 2 / 6
