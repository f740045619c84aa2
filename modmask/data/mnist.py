"""MNIST from the four standard IDX files, with size, magic-number and checksum checks.

The files are the usual gzip-compressed IDX files (``train-images-idx3-ubyte.gz`` ...). Reading
checks each file's magic number, its dimensions against the header and the file size, and (by
default) the SHA-256 of the decompressed content, so a truncated, corrupt or wrong file stops with
an error naming the file and where it was expected. Checksums of the *content* are used because
re-compressed copies (e.g. ``../shared/data/mnist``) have other ``.gz`` bytes than the official
archives; :func:`download` checks the official archives' MD5 as well.

Permuted MNIST (paper section 3.3) also lives here: :func:`permutations` gives the fixed pixel
permutation of every task from a seed, task 0 being the identity.
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# (magic number, dimensions) of each file. Magic 0x0803: unsigned bytes, 3 dimensions; 0x0801: 1.
LAYOUT = {
    "train_images": (0x0803, (60000, 28, 28)),
    "train_labels": (0x0801, (60000,)),
    "test_images": (0x0803, (10000, 28, 28)),
    "test_labels": (0x0801, (10000,)),
}
# SHA-256 of the decompressed IDX content (the same for every faithful copy of MNIST).
CONTENT_SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# MD5 of the official .gz archives (what the download mirror serves).
ARCHIVE_MD5 = {
    "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
    "test_images": "9fb629c4189551a2d022fa330f9573f3",
    "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
PIXELS = 28 * 28
CLASSES = 10
HINT = ("set permuted_mnist.data.mnist_dir to a folder holding the four MNIST IDX files, or set "
        "permuted_mnist.data.download: true to fetch them")


class MnistFileError(ValueError):
    """A missing, truncated or corrupt MNIST file; the message names the file and its expected path."""


def parse_idx(raw: bytes, expected_magic: int | None = None, expected_shape: tuple | None = None,
              name: str = "IDX data") -> np.ndarray:
    """Decode uncompressed IDX bytes (unsigned-byte data only) into a numpy array."""
    if len(raw) < 4:
        raise MnistFileError(f"{name}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        raise MnistFileError(f"{name}: magic number {magic:#010x} is not an unsigned-byte IDX file")
    if expected_magic is not None and magic != expected_magic:
        raise MnistFileError(f"{name}: magic number {magic:#010x}, expected {expected_magic:#010x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistFileError(f"{name}: {len(raw)} bytes, too short for a {ndim}-dimensional IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise MnistFileError(f"{name}: dimensions {shape}, expected {tuple(expected_shape)}")
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise MnistFileError(f"{name}: {len(raw)} bytes, but the header {shape} needs {header + size} "
                             f"(truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_file(path: str | Path, key: str | None = None, verify: bool = True) -> np.ndarray:
    """Read one (gzip-compressed or plain) IDX file; ``key`` (e.g. ``"train_images"``) enables the checks."""
    path = Path(path)
    if not path.exists():
        raise MnistFileError(f"MNIST file {path.name} not found: expected it at {path.resolve()}; {HINT}")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise MnistFileError(f"MNIST file {path.name} at {path.resolve()} cannot be decompressed ({error}); "
                             f"the file is corrupt or truncated: {HINT}") from error
    magic, shape = LAYOUT[key] if key else (None, None)
    try:
        array = parse_idx(raw, magic, shape, name=f"MNIST file {path.name} at {path.resolve()}")
    except MnistFileError as error:
        raise MnistFileError(f"{error}; {HINT}") from None
    if key and verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != CONTENT_SHA256[key]:
            raise MnistFileError(f"MNIST file {path.name} at {path.resolve()} has the wrong content "
                                 f"(SHA-256 {digest}, expected {CONTENT_SHA256[key]}): corrupt or not MNIST; {HINT}")
    return array


def load(directory: str | Path, verify: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (images uint8 [60000, 28, 28], labels int64), "test": (...)}`` from ``directory``."""
    directory = Path(directory)
    arrays = {key: read_idx_file(directory / name, key, verify) for key, name in FILES.items()}
    return {split: (torch.from_numpy(arrays[f"{split}_images"].copy()),
                    torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64)))
            for split in ("train", "test")}


def subset(images: torch.Tensor, labels: torch.Tensor, size: int | None, seed: int):
    """A fixed random subset of ``size`` examples (all of them when ``size`` is None or too large)."""
    if size is None or size >= len(labels):
        return images, labels
    generator = torch.Generator()
    generator.manual_seed(seed)
    index = torch.randperm(len(labels), generator=generator)[:size].sort().values
    return images[index], labels[index]


def flatten(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 784] in [0, 1]."""
    return images.reshape(len(images), -1).to(torch.float32) / 255.0


def permutations(n_tasks: int, seed: int, size: int = PIXELS) -> torch.Tensor:
    """Pixel permutations ``[n_tasks, size]``: task 0 the identity, the others fixed random ones from ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    perms = [torch.arange(size)]
    perms += [torch.randperm(size, generator=generator) for _ in range(n_tasks - 1)]
    return torch.stack(perms)


def permute(x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Pixels of flattened images ``[N, size]`` in the order ``permutation``."""
    return x[:, permutation]


def download(directory: str | Path, name: str, base_url: str = MIRROR) -> Path:
    """Fetch one MNIST archive (a name from :data:`FILES`) and verify its MD5 and content."""
    keys = {v: k for k, v in FILES.items()}
    if name not in keys:
        raise ValueError(f"unknown MNIST file {name!r}; known: {sorted(keys)}")
    key = keys[name]
    path = Path(directory) / name
    with atomic_path(path) as tmp:
        with urllib.request.urlopen(base_url + name, timeout=120) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        digest = hashlib.md5(tmp.read_bytes()).hexdigest()
        if digest != ARCHIVE_MD5[key]:
            raise MnistFileError(f"downloaded {base_url + name} has MD5 {digest}, expected {ARCHIVE_MD5[key]}")
        read_idx_file(tmp, key, verify=True)  # magic, size and content too
    return path
