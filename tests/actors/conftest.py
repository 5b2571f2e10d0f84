"""An in-process center on a tmp home, with the shipped fakes and a manual clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from tests.projects import write_project

from ._helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def devices() -> FakeDevices:
    return FakeDevices()  # one node "node-0" with 2 GPUs of 16000 MB


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_center(
    home: Path, launcher: FakeLauncher, devices: FakeDevices, clock: Clock
) -> Callable[..., Center]:
    def make(**kw: Any) -> Center:
        args: dict[str, Any] = {"home": home, "launcher": launcher, "devices": devices, "clock": clock}
        args.update(kw)
        return Center(**args)

    return make


@pytest.fixture
def center(make_center: Callable[..., Center]) -> Center:
    return make_center()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small runnable project; returns its root_config.json."""
    return write_project(tmp_path / "proj")
