"""CIFAR-10 batches: reading (with every error path), normalisation, augmentation, download checks."""
import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch

from modmask.data import cifar10
from modmask.data.cifar10 import CLASSES, Cifar10FileError

from local_data import shared_data


def _rows(labels, seed):
    """Images as the official rows: uint8 [N, 3072] = R plane, G plane, B plane (each 32 x 32, row-major)."""
    rng = np.random.RandomState(seed)
    return rng.randint(0, 256, size=(len(labels), 3072)).astype(np.uint8)


def _write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake(root, per_batch=3, test_size=4):
    """A tiny cifar-10-batches-py folder; returns (folder, {file: (rows, labels)})."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    content = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = test_size if name == "test_batch" else per_batch
        labels = [(i + j) % 10 for j in range(n)]
        rows = _rows(labels, i)
        _write(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                               b"filenames": [b"x.png"] * n})
        content[name] = (rows, labels)
    _write(folder / "batches.meta", {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": 10000,
                                     b"num_vis": 3072})
    return folder, content


def test_load_plane_order_and_labels(tmp_path):
    folder, content = _fake(tmp_path)
    for where in (folder, tmp_path):   # the folder itself or the folder holding it
        data = cifar10.load(where, verify=False)
        images, labels = data["train"]
        assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        assert data["test"][0].shape == (4, 3, 32, 32)
    # image 1 of data_batch_2 is train image 3 + 1; its pixel (channel c, row r, col k) is row entry c*1024 + r*32 + k
    rows, batch_labels = content["data_batch_2"]
    image = images[4]
    for c, r, k in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 17, 5)]:
        assert image[c, r, k].item() == rows[1, c * 1024 + r * 32 + k]
    assert torch.equal(image[1], torch.from_numpy(rows[1, 1024:2048].reshape(32, 32)))
    expected = sum((content[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert labels.tolist() == expected
    assert data["test"][1].tolist() == content["test_batch"][1]
    assert torch.equal(data["test"][0].reshape(4, -1), torch.from_numpy(content["test_batch"][0]))
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_verify_checks_split_sizes_and_class_names(tmp_path):
    folder, _ = _fake(tmp_path)
    with pytest.raises(Cifar10FileError, match=r"data_batch_1.*15 images, expected 50000"):
        cifar10.load(folder)
    _write(folder / "batches.meta", {b"label_names": [b"cat"] * 10})
    with pytest.raises(Cifar10FileError, match="batches.meta.*names the classes"):
        cifar10.load(folder)


def test_missing_directory_names_the_path_the_key_and_the_download_rule(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(Cifar10FileError) as info:
        cifar10.load(missing, verify=False)
    message = str(info.value)
    assert str(missing.resolve()) in message
    assert "cifar10.data.cifar_dir" in message and "cifar10.data.download" in message
    assert issubclass(Cifar10FileError, ValueError)


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_missing_file_names_file_and_expected_path(tmp_path, name):
    folder, _ = _fake(tmp_path)
    (folder / name).unlink()
    with pytest.raises(Cifar10FileError) as info:
        cifar10.load(folder, verify=name == "batches.meta")
    message = str(info.value)
    assert f"{name} not found" in message and str((folder / name).resolve()) in message
    assert "cifar10.data.cifar_dir" in message


def test_truncated_pickle(tmp_path):
    folder, _ = _fake(tmp_path)
    raw = (folder / "data_batch_4").read_bytes()
    (folder / "data_batch_4").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(Cifar10FileError, match=r"data_batch_4 at .*corrupt or truncated"):
        cifar10.load(folder, verify=False)
    (folder / "data_batch_4").write_bytes(b"not a pickle at all")
    with pytest.raises(Cifar10FileError, match="data_batch_4"):
        cifar10.load(folder, verify=False)


@pytest.mark.parametrize("labels,pattern", [([0, 10, 2], "outside 0-9.*10 at index 1"),
                                            ([0, -1, 2], "outside 0-9.*-1 at index 1"),
                                            ([0, 1], r"\(2,\) labels for 3 images")])
def test_bad_labels(tmp_path, labels, pattern):
    folder, _ = _fake(tmp_path)
    _write(folder / "data_batch_2", {b"labels": labels, b"data": _rows([0, 0, 0], 9)})
    with pytest.raises(Cifar10FileError, match=f"data_batch_2 at .*{pattern}"):
        cifar10.load(folder, verify=False)


@pytest.mark.parametrize("data", [np.zeros((3, 3000), np.uint8), np.zeros((3, 3072), np.float32),
                                  np.zeros((3, 3, 32, 32), np.uint8)])
def test_wrong_shapes(tmp_path, data):
    folder, _ = _fake(tmp_path)
    _write(folder / "test_batch", {b"labels": [0, 1, 2], b"data": data})
    with pytest.raises(Cifar10FileError, match=r"test_batch at .*expected N x 3072 uint8"):
        cifar10.load(folder, verify=False)
    _write(folder / "test_batch", {b"data": np.zeros((3, 3072), np.uint8)})
    with pytest.raises(Cifar10FileError, match=r"test_batch at .*not a CIFAR-10 batch"):
        cifar10.load(folder, verify=False)


def test_normalize_against_hand_computed_values():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[0, :, 0, 0] = torch.tensor([255, 0, 128], dtype=torch.uint8)
    images[1, 2, 5, 7] = 51
    out = cifar10.normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    expected = [(1.0 - 0.4914) / 0.2470, (0.0 - 0.4822) / 0.2435, (128 / 255 - 0.4465) / 0.2616]
    assert out[0, :, 0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    assert out[1, 2, 5, 7].item() == pytest.approx((0.2 - 0.4465) / 0.2616, rel=1e-6)
    assert out[1, 0, 3, 3].item() == pytest.approx(-0.4914 / 0.2470, rel=1e-6)
    assert torch.equal(cifar10.normalize(images[0]), out[0])   # a single image works too
    with pytest.raises(TypeError, match="uint8"):
        cifar10.normalize(images.float())


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def test_augment_without_padding_is_identity_or_horizontal_flip():
    image = torch.arange(3 * 32 * 32).reshape(1, 3, 32, 32)
    batch = image.repeat(64, 1, 1, 1)
    out = cifar10.augment(batch, _generator(0), padding=0)
    flipped = torch.tensor([torch.equal(o, image[0].flip(-1)) for o in out])
    same = torch.tensor([torch.equal(o, image[0]) for o in out])
    assert (flipped ^ same).all()
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(out[flipped][0][0, 0, :3], torch.tensor([31, 30, 29]))   # known flipped row
    assert torch.equal(cifar10.augment(batch, _generator(0), padding=0, flip=False), batch)


def test_augment_is_a_crop_of_the_zero_padded_image_shifted_at_most_4_px():
    generator = _generator(1)
    images = torch.randint(1, 256, (32, 3, 32, 32), generator=generator).to(torch.uint8)
    out = cifar10.augment(images, _generator(2))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    seen = set()
    for i in range(len(images)):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert len(matches) == 1, f"image {i} is not one crop (+ flip) of the padded image"
        seen.add(matches[0])
    assert len(seen) > 10 and {f for _, _, f in seen} == {False, True}
    # one bright pixel in the middle moves by at most 4 pixels each way (after undoing a flip)
    dot = torch.zeros(50, 1, 32, 32)
    dot[:, 0, 15, 12] = 1
    moved = cifar10.augment(dot, _generator(3))
    rows, cols = torch.nonzero(moved[:, 0], as_tuple=True)[1:]
    assert len(rows) == 50
    assert ((rows - 15).abs() <= 4).all()
    assert (torch.minimum((cols - 12).abs(), (31 - cols - 12).abs()) <= 4).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10


def test_augment_is_deterministic_given_the_generator():
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=_generator(5)).to(torch.uint8)
    a = cifar10.augment(images, _generator(7))
    b = cifar10.augment(images, _generator(7))
    c = cifar10.augment(images, _generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = _generator(7)
    first, second = cifar10.augment(images, g), cifar10.augment(images, g)   # the generator advances
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_download_checksum_mismatch_writes_nothing(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(url, path):
        calls.append(url)
        path.write_bytes(b"garbage, not a tarball" * 100)

    monkeypatch.setattr(cifar10, "_fetch", fake_fetch)
    target = tmp_path / "data"
    with pytest.raises(Cifar10FileError, match=r"has MD5 [0-9a-f]{32}, expected c58f30108f718f92721af3b95e74349a"):
        cifar10.download(target)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert list(target.iterdir()) == []   # no archive, no temporary folder, no half-unpacked batches


def test_download_unpacks_a_verified_archive_atomically(tmp_path, monkeypatch):
    # a tarball in the official layout with tiny class-balanced batches; its MD5 is the expected one
    _fake(tmp_path / "src", per_batch=10, test_size=10)
    archive = tmp_path / "fake.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    fetched = []

    def fake_fetch(url, path):
        fetched.append(url)
        path.write_bytes(archive.read_bytes())

    monkeypatch.setattr(cifar10, "_fetch", fake_fetch)
    monkeypatch.setattr(cifar10, "SPLIT_SIZES", {"train": 50, "test": 10})
    out = tmp_path / "out"
    folder = cifar10.download(out, url="file:///fake.tar.gz", md5=md5)
    assert folder == out / "cifar-10-batches-py"
    assert [p.name for p in out.iterdir()] == ["cifar-10-batches-py"]   # archive and temporary folder gone
    data = cifar10.load(folder)
    assert data["train"][0].shape == (50, 3, 32, 32) and data["test"][1].bincount().tolist() == [1] * 10
    assert cifar10.download(out, url="file:///fake.tar.gz", md5=md5) == folder and fetched == ["file:///fake.tar.gz"]


FAKE_CONVERTER = """
import os, pickle, sys
import numpy as np
here = os.path.dirname(os.path.abspath(__file__))
if not os.path.exists(os.path.join(here, "cifar10-jpeg.tar.gz")):
    sys.exit("no archive beside the converter")
if open(os.path.join(here, "cifar10-jpeg.tar.gz")).read() == "bad":
    sys.exit("boom: cannot read the archive")
out = os.path.join(sys.argv[1], "cifar-10-batches-py")
os.makedirs(out)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    with open(os.path.join(out, name), "wb") as f:
        pickle.dump({b"labels": list(range(10)), b"data": np.full((10, 3072), 7, np.uint8)}, f)
with open(os.path.join(out, "batches.meta"), "wb") as f:
    pickle.dump({b"label_names": [c.encode() for c in sys.argv[2:] or %r]}, f)
""" % (list(CLASSES),)


def test_local_copy_runs_the_converter_once_and_atomically(tmp_path, monkeypatch):
    converter = tmp_path / "tools" / "convert.py"
    converter.parent.mkdir()
    converter.write_text(FAKE_CONVERTER)
    archive = tmp_path / "elsewhere" / "my-jpegs.tar.gz"   # another folder and name: staged as links
    archive.parent.mkdir()
    archive.write_text("jpegs")
    monkeypatch.setattr(cifar10, "SPLIT_SIZES", {"train": 50, "test": 10})
    dest = tmp_path / "cache"
    folder = cifar10.local_copy(archive, dest, converter=converter)
    assert folder == dest / "cifar-10-batches-py" and [p.name for p in dest.iterdir()] == [folder.name]
    assert cifar10.load(folder)["train"][0].shape == (50, 3, 32, 32)
    converter.write_text("raise SystemExit('must not run again')")
    assert cifar10.local_copy(archive, dest, converter=converter) == folder
    # a broken copy is replaced by a fresh one
    converter.write_text(FAKE_CONVERTER)
    (folder / "test_batch").write_bytes(b"\x80")
    assert cifar10.local_copy(archive, dest, converter=converter) == folder
    assert cifar10.load(folder)["test"][0].shape == (10, 3, 32, 32) and [p.name for p in dest.iterdir()] == [folder.name]
    # a failing converter: its error comes back, nothing is left behind
    archive.write_text("bad")
    with pytest.raises(Cifar10FileError, match="(?s)convert.py failed.*boom: cannot read the archive"):
        cifar10.local_copy(archive, tmp_path / "other", converter=converter)
    assert list((tmp_path / "other").iterdir()) == []
    with pytest.raises(Cifar10FileError, match="nothing.tar.gz not found: expected it at .*elsewhere"):
        cifar10.local_copy(archive.parent / "nothing.tar.gz", tmp_path / "other", converter=converter)


@pytest.mark.skipif(not (shared_data("cifar10") / "cifar10-jpeg.tar.gz").exists(),
                    reason="no local CIFAR-10 JPEG archive")
def test_local_copy_of_the_shared_jpeg_archive(cifar10_batches):
    # the session's one conversion of the real archive (conftest.py); the smoke workflow reads it too
    archive = shared_data("cifar10") / "cifar10-jpeg.tar.gz"
    folder, cache = cifar10_batches, cifar10_batches.parent
    assert folder.name == "cifar-10-batches-py"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]   # no leftovers
    data = cifar10.load(folder)
    for split, n in (("train", 50000), ("test", 10000)):
        images, labels = data[split]
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.bincount(minlength=10).tolist() == [n // 10] * 10
    mtime = folder.stat().st_mtime_ns
    assert cifar10.local_copy(archive, cache) == folder and folder.stat().st_mtime_ns == mtime


def test_workflow_data_step_converts_a_jpeg_archive_into_the_tensor_cache(tmp_path, monkeypatch):
    """The workflow's data job given the JPEG archive (the smoke run reads an already converted copy)."""
    import logging

    from modmask.io import load_torch

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / cifar10.CONVERTER_NAME).write_text(FAKE_CONVERTER)
    (shared / cifar10.JPEG_ARCHIVE_NAME).write_text("jpegs")
    monkeypatch.setattr(cifar10, "SPLIT_SIZES", {"train": 50, "test": 10})
    block = {"jpeg_archive": str(shared / cifar10.JPEG_ARCHIVE_NAME), "train_size": 20, "test_size": None}
    kind, source = cifar10.source_folder(block, None)
    assert kind == "jpeg"
    cifar10.prepare_data(block, source, tmp_path / "work", tmp_path / "data.pt", logging.getLogger("test"))
    cache = load_torch(tmp_path / "data.pt")
    assert len(cache["train"]["labels"]) == 20 and len(cache["test"]["labels"]) == 10
    assert (tmp_path / "work" / "cifar-10-batches-py").is_dir()
