"""Runtime tests train in-process: forget the user modules (Model, Dataset, helper...) each test imported."""

from __future__ import annotations

import pytest

from tests.projects import isolated_imports


@pytest.fixture(autouse=True)
def _isolated_imports():
    with isolated_imports():
        yield
