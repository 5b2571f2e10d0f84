"""Device probes (devices.py): the fake GPU spec, the fake probe's arithmetic, NVML on a GPU-less node."""

from __future__ import annotations

import pytest

from dlnest_ray.devices import FAKE_GPUS_ENV, FakeProbe, GpuInfo, NvmlProbe, default_probe, parse_fake_gpus
from dlnest_ray.errors import DlnestError


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2x16000", (2, 16000)), ("4X8000", (4, 8000)), (" 1 x 24000 ", (1, 24000)), ("0x100", (0, 100))],
)
def test_parse_fake_gpus(value: str, expected: tuple[int, int]):
    assert parse_fake_gpus(value) == expected


@pytest.mark.parametrize(
    "value", ["", "2", "2x", "x16000", "2x0", "-1x100", "2x-5", "2*16000", "two x 8", "2x1.5"]
)
def test_parse_fake_gpus_rejects(value: str):
    with pytest.raises(DlnestError) as info:
        parse_fake_gpus(value)
    assert FAKE_GPUS_ENV in str(info.value)
    assert str(info.value).startswith("DLNEST_RAY_FAKE_GPUS=")


def test_fake_probe_free_is_total_minus_reserved():
    probe = FakeProbe(count=3, total_mb=16000)
    gpus = probe.read({0: 6000, 2: 16000})
    assert [g.index for g in gpus] == [0, 1, 2]
    assert all(isinstance(g, GpuInfo) and g.total_mb == 16000 for g in gpus)
    assert [(g.used_mb, g.free_mb) for g in gpus] == [(6000, 10000), (0, 16000), (16000, 0)]


def test_fake_probe_clamps():
    gpus = FakeProbe(count=2, total_mb=8000).read({0: 50000, 1: -10})
    assert (gpus[0].used_mb, gpus[0].free_mb) == (8000, 0)
    assert (gpus[1].used_mb, gpus[1].free_mb) == (0, 8000)


def test_fake_probe_without_reservations():
    gpus = FakeProbe(count=2, total_mb=8000).read()
    assert [g.free_mb for g in gpus] == [8000, 8000]
    assert FakeProbe(count=0, total_mb=8000).read({}) == ()


def test_fake_probe_ignores_reservations_of_unknown_indices():
    gpus = FakeProbe(count=1, total_mb=8000).read({5: 1000})
    assert len(gpus) == 1 and gpus[0].free_mb == 8000


def test_default_probe_fake_from_env():
    probe = default_probe({FAKE_GPUS_ENV: "2x8000"})
    assert isinstance(probe, FakeProbe)
    assert (probe.count, probe.total_mb) == (2, 8000)
    assert [g.free_mb for g in probe.read({1: 3000})] == [8000, 5000]


def test_default_probe_bad_env_names_the_variable():
    with pytest.raises(DlnestError, match=FAKE_GPUS_ENV):
        default_probe({FAKE_GPUS_ENV: "lots"})


@pytest.mark.parametrize("environ", [{}, {FAKE_GPUS_ENV: ""}])
def test_default_probe_without_fake_is_nvml(environ: dict[str, str]):
    assert isinstance(default_probe(environ), NvmlProbe)


def test_default_probe_reads_os_environ(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(FAKE_GPUS_ENV, "3x1000")
    probe = default_probe()
    assert isinstance(probe, FakeProbe) and probe.count == 3


def test_nvml_probe_reads_without_raising():
    """On a GPU-less node (no driver) NVML reports no GPUs; with GPUs, sane readings."""
    gpus = NvmlProbe().read()
    assert isinstance(gpus, tuple)
    for g in gpus:
        assert g.total_mb > 0 and 0 <= g.free_mb <= g.total_mb
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        assert gpus == ()
