"""CIFAR-10 from the official ``cifar-10-batches-py`` layout, with shape, label and size checks.

The folder holds ``data_batch_1`` .. ``data_batch_5`` (training, 10000 images each), ``test_batch``
(10000 images) and ``batches.meta`` (class names): Python pickles whose ``b"data"`` is an
``N x 3072`` uint8 array (the red, green and blue 32 x 32 planes of each image, one row per image)
and whose ``b"labels"`` is a list of N class indices. A missing, truncated or inconsistent file stops
with a :class:`Cifar10FileError` naming the file and where it was expected. The pickles are read by an
unpickler that accepts only what the official format holds (NumPy arrays, bytes, lists, numbers): a
file asking for anything else (a function to call) is refused before that is looked up.

There are no content checksums for the batches: the local copy made by :func:`local_copy` from
the shared JPEG archive is a re-encoding whose pixels differ slightly from the official release.
:func:`download` checks the official tarball's MD5 instead. ``verify=True`` checks what every
faithful copy shares: 50000/10000 images, 5000/1000 per class, the class names of ``batches.meta``.

:func:`normalize` and :func:`augment` are the usual CIFAR input pipeline (per-channel
standardisation; random 32 x 32 crop of the image padded by 4 zero pixels, random horizontal flip).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..io import save_torch
from .mnist import subset  # the same fixed random subset as permuted MNIST's

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
SPLIT_FILES = {"train": TRAIN_FILES, "test": TEST_FILES}
SPLIT_SIZES = {"train": 50000, "test": 10000}
IMAGE_SHAPE = (3, 32, 32)
ROW = 3 * 32 * 32
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
# Per-channel mean and standard deviation of the training images (pixel values scaled to [0, 1]).
# The standard deviation is over all training pixels of a channel (not the often copied
# 0.2023/0.1994/0.2010, which is a mean of per-image deviations).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
HINT = (f"set cifar10.data.cifar_dir to a folder holding {FOLDER} (or that folder itself), or set "
        f"cifar10.data.download: true so that the download rule fetches and verifies the official "
        f"archive {URL}")
JPEG_ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
CONVERTER_NAME = "make_cifar10_batches.py"


class Cifar10FileError(ValueError):
    """A missing, truncated or inconsistent CIFAR-10 file; the message names the file and its expected path."""


def batches_dir(directory: str | Path) -> Path:
    """The folder holding the batch files: ``directory`` itself or its ``cifar-10-batches-py`` subfolder."""
    directory = Path(directory)
    if not (directory / TRAIN_FILES[0]).exists() and (directory / FOLDER).is_dir():
        return directory / FOLDER
    return directory


def _latin1(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2, limited to that use."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode is allowed only for latin1 text, got {encoding!r}")
    return text.encode("latin1")


def _numpy_function(module: str, name: str):
    """A NumPy internal by its NumPy 2 (``numpy._core``) or NumPy 1 (``numpy.core``) home."""
    core = getattr(np, "_core", None)
    if core is None:
        import numpy.core as core  # NumPy 1
    return getattr(getattr(core, module), name)


# The only globals the official batches hold (a uint8 array in a dict of bytes, lists and ints), as
# NumPy 1 or 2 pickle it at any protocol; bytes at protocol 2 as Python 3 writes them.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_function("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_function("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_function("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_function("numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _latin1,
}


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global that a CIFAR-10 batch never holds."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what the official format holds: any other global (a function to call, a class to
    build) is refused before it is looked up, so a crafted file cannot run code."""

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise _Refused(f"{module}.{name}")
        return allowed()

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def _unpickle(path: Path, what: str):
    if not path.exists():
        raise Cifar10FileError(f"CIFAR-10 {what} file {path.name} not found: expected it at {path.resolve()}; {HINT}")
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, encoding="bytes").load()
    except _Refused as error:
        raise Cifar10FileError(f"CIFAR-10 file {path.name} at {path.resolve()} was refused: it asks for "
                               f"{error}, which the official format never holds (only arrays, bytes, lists and "
                               f"numbers), so it is crafted or foreign and nothing in it was run; delete it. "
                               f"{HINT}") from None
    except Exception as error:  # truncated pickles raise EOFError, UnpicklingError, ValueError...
        raise Cifar10FileError(f"CIFAR-10 file {path.name} at {path.resolve()} cannot be read "
                               f"({type(error).__name__}: {error}); the file is corrupt or truncated: {HINT}") from error


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]``), checked for consistency."""
    path = Path(path)
    batch = _unpickle(path, "batch")
    where = f"CIFAR-10 file {path.name} at {path.resolve()}"
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise Cifar10FileError(f"{where} is not a CIFAR-10 batch (needs keys b'data' and b'labels'; has {keys}); {HINT}")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise Cifar10FileError(f"{where}: data has shape {data.shape} and type {data.dtype}, "
                               f"expected N x {ROW} uint8 rows; {HINT}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise Cifar10FileError(f"{where}: labels are not integers ({error}); {HINT}") from error
    if labels.shape != (data.shape[0],):
        raise Cifar10FileError(f"{where}: {labels.shape} labels for {data.shape[0]} images; {HINT}")
    bad = (labels < 0) | (labels >= len(CLASSES))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise Cifar10FileError(f"{where}: {int(bad.sum())} labels outside 0-{len(CLASSES) - 1} "
                               f"(e.g. {int(labels[first])} at index {first}); {HINT}")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def read_meta(path: str | Path) -> tuple[str, ...]:
    """Class names from ``batches.meta``."""
    path = Path(path)
    meta = _unpickle(path, "meta")
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if names is None:
        raise Cifar10FileError(f"CIFAR-10 file {path.name} at {path.resolve()} has no b'label_names'; {HINT}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load(directory: str | Path, verify: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (images uint8 [50000, 3, 32, 32], labels int64), "test": (...)}`` from ``directory``.

    ``directory`` is the ``cifar-10-batches-py`` folder or the folder holding it. Every file is
    checked for consistency (row size, label count and range); ``verify`` also checks the class
    names in ``batches.meta``, the split sizes and that every class has a tenth of each split.
    """
    folder = batches_dir(directory)
    if not folder.is_dir():
        raise Cifar10FileError(f"CIFAR-10 folder {folder.name} not found: expected {FOLDER} with "
                               f"{', '.join(TRAIN_FILES + TEST_FILES)} and {META_FILE} at {folder.resolve()}; {HINT}")
    if verify:
        names = read_meta(folder / META_FILE)
        if names != CLASSES:
            raise Cifar10FileError(f"CIFAR-10 file {META_FILE} at {(folder / META_FILE).resolve()} names the "
                                   f"classes {names}, expected {CLASSES}; {HINT}")
    result = {}
    for split, files in SPLIT_FILES.items():
        parts = [read_batch(folder / name) for name in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if verify:
            where = f"CIFAR-10 {split} files {', '.join(files)} at {folder.resolve()}"
            if len(labels) != SPLIT_SIZES[split]:
                raise Cifar10FileError(f"{where}: {len(labels)} images, expected {SPLIT_SIZES[split]}; {HINT}")
            counts = np.bincount(labels, minlength=len(CLASSES))
            if (counts != SPLIT_SIZES[split] // len(CLASSES)).any():
                raise Cifar10FileError(f"{where}: images per class {counts.tolist()}, expected "
                                       f"{SPLIT_SIZES[split] // len(CLASSES)} each; {HINT}")
        result[split] = (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))
    return result


# ---- input pipeline -----------------------------------------------------------------------------

def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[..., 3, H, W]`` -> float32 ``(x / 255 - mean) / std`` per channel."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"normalize expects images [..., 3, H, W], got shape {tuple(images.shape)}")
    mean = torch.tensor(MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of each image padded by ``padding`` zeros, then a random horizontal flip.

    ``images`` ``[N, C, H, W]`` of any type (apply it to the uint8 images, before :func:`normalize`,
    so the padding is black as usual). One gather for the whole batch; the offsets and flips are
    drawn from ``generator`` (on its device), so the same generator state gives the same result.
    """
    if images.dim() != 4:
        raise ValueError(f"augment expects images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=generator.device)
    flips = torch.randint(0, 2, (n,), generator=generator, device=generator.device).bool()
    offsets, flips = offsets.to(images.device), flips.to(images.device) & flip
    padded = torch.nn.functional.pad(images, (padding,) * 4) if padding else images
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)                     # [N, H]
    cols = torch.arange(w, device=images.device).expand(n, w)
    cols = offsets[:, 1, None] + torch.where(flips[:, None], w - 1 - cols, cols)          # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


# ---- getting the files --------------------------------------------------------------------------

def _fetch(url: str, path: Path) -> None:
    """Download ``url`` into ``path`` (the one place that touches the network)."""
    with urllib.request.urlopen(url, timeout=300) as response, open(path, "wb") as f:
        shutil.copyfileobj(response, f)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _loads(folder: Path) -> bool:
    try:
        load(folder, verify=True)
    except Cifar10FileError:
        return False
    return True


def _install(built: Path, target: Path) -> Path:
    """Move the finished folder ``built`` to ``target`` in one rename; a broken ``target`` is replaced."""
    broken = None
    if target.exists():
        if _loads(target):          # someone else finished first
            return target
        broken = Path(tempfile.mkdtemp(prefix=f".{target.name}.broken.", dir=target.parent))
        os.replace(target, broken / target.name)
    os.replace(built, target)
    if broken is not None:
        shutil.rmtree(broken, ignore_errors=True)
    return target


def download(directory: str | Path, url: str = URL, md5: str = MD5) -> Path:
    """Fetch the official tarball, check its MD5 and unpack it to ``directory/cifar-10-batches-py``.

    The archive and the unpacked files live in a temporary folder inside ``directory`` until they
    are checked; the finished folder appears with one rename. Returns that folder (at once if it
    already holds a complete copy).
    """
    directory = Path(directory)
    target = directory / FOLDER
    if target.exists() and _loads(target):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".cifar10-download.", dir=directory))
    try:
        archive = work / "cifar-10-python.tar.gz"
        _fetch(url, archive)
        digest = _md5(archive)
        if digest != md5:
            raise Cifar10FileError(f"downloaded {url} has MD5 {digest}, expected {md5}: incomplete or not the "
                                   f"official CIFAR-10 archive; nothing was written to {target.resolve()}")
        unpacked = work / "unpacked"
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(unpacked, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(unpacked)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise Cifar10FileError(f"downloaded {url} cannot be unpacked ({error})") from error
        load(unpacked / FOLDER, verify=True)
        return _install(unpacked / FOLDER, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def local_copy(jpeg_archive: str | Path, dest: str | Path, converter: str | Path | None = None,
               timeout: float | None = 3600) -> Path:
    """Make ``dest/cifar-10-batches-py`` from the shared JPEG archive once; returns that folder.

    Runs the converter script (default: ``make_cifar10_batches.py`` beside the archive) with this
    Python in a subprocess, writing into a temporary folder inside ``dest`` that is renamed into place
    when the result loads. Does nothing when ``dest`` already holds a copy that loads.
    """
    jpeg_archive, dest = Path(jpeg_archive).resolve(), Path(dest)
    target = dest / FOLDER
    if target.exists() and _loads(target):
        return target
    if not jpeg_archive.is_file():
        raise Cifar10FileError(f"CIFAR-10 JPEG archive {jpeg_archive.name} not found: expected it at {jpeg_archive}; "
                               f"{HINT}")
    converter = Path(converter).resolve() if converter else jpeg_archive.parent / CONVERTER_NAME
    if not converter.is_file():
        raise Cifar10FileError(f"CIFAR-10 converter {converter.name} not found: expected it at {converter}")
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".cifar10-local.", dir=dest))
    try:
        script = converter
        if converter.parent != jpeg_archive.parent or jpeg_archive.name != JPEG_ARCHIVE_NAME:
            # The converter reads the archive beside itself (by its fixed name): stage both as links.
            stage = work / "stage"
            stage.mkdir()
            (stage / CONVERTER_NAME).symlink_to(converter)
            (stage / JPEG_ARCHIVE_NAME).symlink_to(jpeg_archive)
            script = stage / CONVERTER_NAME
        out = work / "out"
        result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise Cifar10FileError(f"{converter} failed on {jpeg_archive} (exit {result.returncode}):\n"
                                   f"{result.stderr.strip()[-2000:]}")
        load(out / FOLDER, verify=True)
        return _install(out / FOLDER, target)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


# ---- the workflow's data cache (rules/cifar10.smk: download_cifar10, cifar10_data) ---------------------

CACHE_FORMAT = "modmask.cifar10.data/1"


def source_folder(data_block: dict, download_folder: str | None) -> tuple[str, str]:
    """Where the images come from: ("batches", folder) or ("jpeg", archive)."""
    if data_block.get("cifar_dir"):
        return "batches", data_block["cifar_dir"]
    if data_block.get("download"):
        return "batches", download_folder
    if data_block.get("jpeg_archive"):
        return "jpeg", data_block["jpeg_archive"]
    raise ValueError("cifar10.data: set cifar_dir (an existing cifar-10-batches-py), download: true, or "
                     "jpeg_archive (the shared JPEG copy)")


def source_files(data_block: dict, source: tuple[str, str]) -> list[str]:
    """What the data cache is made from: the batch files of an existing copy (so that a missing one is
    named before anything runs), else the download folder or the JPEG archive (``source_folder``)."""
    if data_block.get("cifar_dir"):
        folder = batches_dir(data_block["cifar_dir"])
        return [f"{folder}/{name}" for name in (*TRAIN_FILES, *TEST_FILES)]
    return [source[1]]


def data_cache(data: dict, train_size: int | None, test_size: int | None, seed: int) -> dict:
    """The tensors the other jobs load: uint8 images and labels, optionally fixed random subsets."""
    cache = {"format": CACHE_FORMAT, "classes": list(CLASSES)}
    for part, size in (("train", train_size), ("test", test_size)):
        images, labels = subset(*data[part], size, seed)
        cache[part] = {"images": images.contiguous(), "labels": labels.contiguous()}
    return cache


def check_cache(cache: dict, path) -> dict:
    if cache.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not a CIFAR-10 data cache (format {cache.get('format')!r})")
    return cache


def prepare_data(data_block: dict, source, work_dir, out_path, log) -> None:
    """The uint8 tensor cache every other job reads, from a folder of official batches or the JPEG
    archive (converted once into that layout under ``work_dir``)."""
    source = Path(source)
    if source.name.endswith(".tar.gz"):
        log.info("converting %s into the cifar-10-batches-py layout under %s (once)", source, work_dir)
        source = local_copy(source, work_dir)
    log.info("reading CIFAR-10 from %s", source)
    data = load(source, verify=True)
    cache = data_cache(data, data_block.get("train_size"), data_block.get("test_size"), int(data_block.get("seed", 0)))
    save_torch(cache, out_path)
    log.info("wrote %s: %d training and %d test images", out_path, len(cache["train"]["labels"]),
             len(cache["test"]["labels"]))
