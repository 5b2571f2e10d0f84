"""Shared fixtures. Real MNIST lives in ../shared/data/mnist (beside the checkout); nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = (REPO.parent / "shared" / "data" / "mnist").resolve()

# The MNIST template reads this when its config has no data_root; set it before any test runs.
os.environ.setdefault("DLNEST_MNIST_DIR", str(MNIST_DIR))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real MNIST is expected at {MNIST_DIR} (the shared data folder beside the checkout)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _keep_cwd():
    """Tests that train or analyze must leave the working directory as they found it."""
    before = os.getcwd()
    yield
    after = os.getcwd()
    if after != before:
        os.chdir(before)
        pytest.fail(f"the working directory changed from {before} to {after}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests need a real CUDA device: skipped (not failed) where there is none, as in CI."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
