"""The client's ``call``: the center's own errors arrive as themselves, reads ride out a center restart,
changing calls are never retried (Ray cannot say whether they ran)."""

from __future__ import annotations

from typing import Any

import pytest
import ray.exceptions

from dlnest_ray.actors import client as client_mod
from dlnest_ray.errors import DlnestError


class FakeMethod:
    """A remote method whose first ``failures`` calls find the center restarting."""

    def __init__(self, failures: int, value: Any = "ok") -> None:
        self.failures, self.value, self.calls = failures, value, 0

    def remote(self, *args: Any, **kwargs: Any) -> FakeMethod:
        self.calls += 1
        return self


def fake_get(ref: FakeMethod) -> Any:
    if ref.calls <= ref.failures:
        raise ray.exceptions.ActorUnavailableError("the actor was restarted", b"\0" * 16)
    return ref.value


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "get", fake_get)
    monkeypatch.setattr("time.sleep", lambda s: None)


def test_a_read_is_retried_while_the_center_restarts() -> None:
    method = FakeMethod(failures=3, value=[{"task_id": "T_0001"}])
    assert client_mod.call(method, retry_s=30.0) == [{"task_id": "T_0001"}]
    assert method.calls == 4


def test_a_changing_call_is_not_retried() -> None:
    method = FakeMethod(failures=1)
    with pytest.raises(DlnestError, match="the center is unavailable \\(ActorUnavailableError\\); retry"):
        client_mod.call(method)
    assert method.calls == 1


def test_a_read_gives_up_after_its_retry_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = iter(range(0, 1000, 10))
    monkeypatch.setattr("time.monotonic", lambda: float(next(now)))
    method = FakeMethod(failures=100)
    with pytest.raises(DlnestError, match="center is unavailable"):
        client_mod.call(method, retry_s=30.0)
    assert 2 <= method.calls <= 5


def test_the_client_retries_reads_only() -> None:
    class Center:
        def __init__(self) -> None:
            self.get_task_info = FakeMethod(failures=1, value=[])
            self.run_train = FakeMethod(failures=1, value="T_0001")

    c = client_mod.Client(Center())
    assert c.get_task_info(include_finished=True) == []
    with pytest.raises(DlnestError, match="center is unavailable"):
        c.run_train("cfg.json")


def test_a_sweep_with_a_name_reaches_the_center_with_every_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    """``name`` is both a sweep keyword and what ``_change`` calls the method: it must not collide."""
    sent: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class Center:
        class sweep:  # a remote method's stand-in
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> str:
                sent.append((args, kwargs))
                return "S_0001"

    monkeypatch.setattr(client_mod, "call", lambda method, *a, **kw: method.remote(*a, **kw))
    got = client_mod.Client(Center()).sweep(
        "/p/root_config.json", space={"lr": "0.1,0.2"}, name="lrs", trials=None, capture_env=False
    )
    assert got == "S_0001"
    [(args, kwargs)] = sent
    assert args == ()
    assert (kwargs["config_path"], kwargs["name"], kwargs["space"], kwargs["env"]) == (
        "/p/root_config.json",
        "lrs",
        {"lr": "0.1,0.2"},
        {},
    )


class KeywordsOnly:
    """A center handle as Ray builds it when this process cannot load the center's class (the cluster
    runs other dlnest-ray code): each method takes keywords only, and has no ``code_id`` if the center
    is older than that method."""

    def __init__(self, code: str | None) -> None:
        self.sent: dict[str, dict[str, Any]] = {}
        self.code = code

    def __getattr__(self, name: str) -> Any:
        if name == "code_id" and self.code is None:
            raise AttributeError(name)
        handle = self

        class Method:
            @staticmethod
            def remote(**kwargs: Any) -> Any:  # a positional argument would be a TypeError, as in Ray
                handle.sent[name] = kwargs
                return handle.code if name == "code_id" else []

        return Method


def test_every_center_call_goes_by_keyword_so_a_skewed_handle_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray, "get", lambda ref: ref)
    center = KeywordsOnly(code="old")
    c = client_mod.Client(center)
    c.get_task_info(True)
    c.task_rows(True)
    c.get_dlnest_output(5)
    c.del_task("T_0001")
    c.drain(True)
    c.change_devices(["0"])
    c.change_delay(2.0)
    c.change_max_task_per_device(2)
    c.change_margin(1.2)
    c.change_retries(1)
    c.change_notify_webhook("")
    c.get_sweep("S_0001")
    c.run_train("/p/root_config.json", capture_env=False, memory_mb=100)
    c.continue_train("/p/Saves/x", capture_env=False)
    c.analyze("/p/Saves/x", capture_env=False)
    assert center.sent["get_task_info"] == {"include_finished": True}
    assert center.sent["get_dlnest_output"] == {"offset": 5}
    assert center.sent["run_train"] == {"config_path": "/p/root_config.json", "env": {}, "memory_mb": 100}
    assert center.sent["continue_train"]["record_path"] == "/p/Saves/x"
    assert len(center.sent) == 15


def test_code_skew_says_to_restart_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlnest_ray.codeid import code_id

    monkeypatch.setattr(ray, "get", lambda ref: ref)
    assert client_mod.Client(KeywordsOnly(code=code_id())).code_skew() is None
    for center in (KeywordsOnly(code="0123456789abcdef"), KeywordsOnly(code=None)):  # other code; too old
        said = client_mod.Client(center).code_skew()
        assert said is not None and "`dlnest-ray down`, then `dlnest-ray up`" in said
