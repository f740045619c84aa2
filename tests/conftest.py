"""Fixtures shared across test modules."""
from __future__ import annotations

import pytest

from local_data import shared_data


@pytest.fixture(scope="session")
def cifar10_batches(tmp_path_factory):
    """The shared CIFAR-10 JPEG archive converted once per test session (it takes minutes), or None
    where the archive is missing. The conversion test and the smoke workflow both read this copy."""
    from modmask.data import cifar10

    archive = shared_data("cifar10") / cifar10.JPEG_ARCHIVE_NAME
    if not archive.exists():
        return None
    return cifar10.local_copy(archive, tmp_path_factory.mktemp("cifar10-converted"))
