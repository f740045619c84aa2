"""The CIFAR-10 experiment's pieces: confusion tables, class removal, fixed output masks, stability IoU."""
from __future__ import annotations

import logging

import pytest
import torch

from modmask.cnn import build_cnn
from modmask.experiments import cifar10
from modmask.masks import BinaryMask
from modmask.training import TrainSettings

LOG = logging.getLogger("test")
TINY = {"model": "simple_cnn", "dropout": False, "widths": [4, 4, 8, 8]}


def test_confusion_counts_and_tables_against_a_hand_computed_example():
    labels = torch.tensor([0, 0, 0, 1, 1, 3])
    predicted = torch.tensor([0, 0, 1, 1, 0, 5])
    counts = cifar10.confusion_counts(labels, predicted)
    assert counts.shape == (10, 10) and int(counts.sum()) == 6
    assert (counts[0, 0], counts[0, 1], counts[1, 1], counts[1, 0], counts[3, 5]) == (2, 1, 1, 1, 1)
    accuracy, confusion = cifar10.mask_tables(counts, "without_cat", "cat")
    by_class = {r["class"]: r for r in accuracy}
    assert by_class["airplane"]["accuracy"] == pytest.approx(2 / 3) and by_class["cat"]["accuracy"] == 0.0
    assert by_class["automobile"]["total"] == 2 and by_class["bird"]["total"] == 0
    cell = {(r["true_class"], r["predicted_class"]): r for r in confusion}
    assert cell[("airplane", "automobile")]["fraction"] == pytest.approx(1 / 3)
    assert cell[("cat", "dog")]["count"] == 1 and cell[("cat", "dog")]["fraction"] == 1.0
    assert all(r["removed_class"] == "cat" and r["mask"] == "without_cat" for r in confusion)
    assert len(confusion) == 100


def test_without_classes_drops_exactly_those_labels():
    images = torch.arange(8).view(8, 1, 1, 1).expand(8, 3, 2, 2)
    labels = torch.tensor([0, 3, 5, 3, 1, 5, 9, 0])
    kept_images, kept_labels = cifar10.without_classes(images, labels, ("cat", "dog"))
    assert kept_labels.tolist() == [0, 1, 9, 0]
    assert kept_images[:, 0, 0, 0].tolist() == [0, 4, 6, 7]
    with pytest.raises(ValueError, match="unknown CIFAR-10 class 'cow'"):
        cifar10.without_classes(images, labels, ("cow",))


def test_class_pairs_are_distinct_ordered_and_follow_the_seed():
    pairs = cifar10.class_pairs(10, seed=3)
    assert len(set(pairs)) == 10
    assert all(cifar10.class_index(a) < cifar10.class_index(b) for a, b in pairs)
    assert pairs == cifar10.class_pairs(10, seed=3) and pairs != cifar10.class_pairs(10, seed=4)
    assert len(set(cifar10.class_pairs(45, seed=0))) == 45
    with pytest.raises(ValueError, match="45"):
        cifar10.class_pairs(46, seed=0)


def test_stability_row_is_the_iou_over_all_weights():
    a = BinaryMask({"w1": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "w2": torch.tensor([1, 0], dtype=torch.bool)})
    b = BinaryMask({"w1": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "w2": torch.tensor([1, 0], dtype=torch.bool)})
    row = cifar10.stability_row(a, b)
    # both: w1[0], w2[0]; either: w1[0..2], w2[0]
    assert (row["intersection"], row["union"], row["kept_a"], row["kept_b"]) == (2, 4, 3, 3)
    assert row["iou"] == pytest.approx(0.5)


def test_image_sampler_is_seeded_resumable_and_augments():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(50) % 10
    first = cifar10.ImageSampler(images, labels, 6, seed=1, device="cpu", augment=True)
    first()
    state = first.state_dict()
    expected = first()
    second = cifar10.ImageSampler(images, labels, 6, seed=99, device="cpu", augment=True)
    second.load_state_dict(state)
    got = second()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    plain = cifar10.ImageSampler(images, labels, 6, seed=1, device="cpu")
    batch, batch_labels = plain()
    # without augmentation every image is one of the data set's, with its own label
    for image, label in zip(batch, batch_labels):
        index = int((images == image).flatten(1).all(1).nonzero()[0])
        assert labels[index] == label


def _toy_data(n_per_class: int = 40, seed: int = 0):
    """16x16 images (the CNN pools globally, so any size works) whose class is told by which 4x4 tile
    is bright (10 of the 16 tiles), plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 60, (len(labels), 3, 16, 16), generator=generator, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 4)
        images[i, :, row * 4:(row + 1) * 4, col * 4:(col + 1) * 4] += 150
    return images, labels


def test_a_removal_mask_keeps_the_control_output_layer_and_trains_the_rest():
    train = _toy_data()
    model = build_cnn(TINY, seed=0)
    settings = TrainSettings(steps=4, lr=0.05, batch_size=20, mask_samples=2, beta=1e-3, log_every=2)
    control, _ = cifar10.train_class_mask(model, train, settings, seed=0, device="cpu", log=LOG)
    removal, _ = cifar10.train_class_mask(model, train, settings, seed=1, device="cpu", log=LOG, removed=("cat",),
                                          fixed_output=control)
    assert removal.fixed_names == [cifar10.OUTPUT_LAYER]
    assert torch.equal(removal.logit(cifar10.OUTPUT_LAYER), control.logit(cifar10.OUTPUT_LAYER))
    # the other layers moved away from their initial logit, the frozen network did not change
    assert all(not torch.all(removal.logit(n) == 2.0) for n in removal.names if n != cifar10.OUTPUT_LAYER)
    assert not any(p.requires_grad for p in model.parameters())
    assert not any("bn" in n or n.endswith("bias") for n in removal.names)


def test_a_trained_cnn_loses_the_removed_class_under_its_removal_mask():
    """End to end on a toy task: the network learns it, the control mask keeps it, and the mask trained
    without one class keeps the others but not that one."""
    train, test = _toy_data(40, seed=0), _toy_data(20, seed=1)
    model, history = cifar10.pretrain(train, TINY, TrainSettings(steps=120, lr=1e-2, batch_size=40, log_every=40),
                                      seed=0, device="cpu", log=LOG)
    assert history.rows[-1]["loss"] < 0.3 * history.rows[0]["loss"]
    settings = TrainSettings(steps=120, lr=0.1, batch_size=40, mask_samples=4, beta=0.03, log_every=40)
    control, _ = cifar10.train_class_mask(model, train, settings, seed=0, device="cpu", log=LOG)
    removal, _ = cifar10.train_class_mask(model, train, settings, seed=1, device="cpu", log=LOG, removed=("cat",),
                                          fixed_output=control)
    accuracy, confusion = cifar10.evaluate_masks(
        model, {"none": (None, None), "control": (control.binary(), None), "without_cat": (removal.binary(), "cat")},
        test, "cpu", LOG)
    acc = accuracy.pivot_table(index="class", columns="mask", values="accuracy")
    assert acc["none"].mean() > 0.9 and acc["control"].mean() > 0.9
    others = acc.drop(index="cat")
    assert others["without_cat"].mean() > 0.8
    assert acc.loc["cat", "without_cat"] < acc.loc["cat", "control"] - 0.5
    assert removal.binary().count() < control.binary().count()  # it is the control minus something
    rows = confusion[(confusion["mask"] == "without_cat") & (confusion["true_class"] == "cat")]
    assert rows["fraction"].sum() == pytest.approx(1.0)
