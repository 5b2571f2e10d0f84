"""`down` removes the center only after it has had time to send word of the runs that just ended."""

from __future__ import annotations

from typing import Any

from dlnest_ray.actors import center_actor
from dlnest_ray.actors.names import CENTER_NAME, NAMESPACE


class _FakeRay:
    """The three calls ``_let_notices_go`` makes, recorded; ``close`` raises when ``broken``."""

    def __init__(self, broken: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.broken = broken
        outer = self

        class _Close:
            def remote(self, wait_s: float) -> tuple[str, float]:
                outer.calls.append(("close", wait_s))
                return ("ref", wait_s)

        class _Center:
            close = _Close()

        self._center = _Center()

    def get_actor(self, name: str, namespace: str) -> Any:
        self.calls.append(("get_actor", (name, namespace)))
        return self._center

    def get(self, ref: Any, timeout: float) -> None:
        self.calls.append(("get", timeout))
        if self.broken:
            raise TimeoutError("the center hangs")


def test_the_center_gets_its_grace_before_it_is_killed() -> None:
    ray = _FakeRay()
    center_actor._let_notices_go(ray)
    grace = center_actor.NOTICE_GRACE_S
    assert ray.calls[0] == ("get_actor", (CENTER_NAME, NAMESPACE))
    assert ray.calls[1] == ("close", grace)
    assert ray.calls[2][0] == "get" and ray.calls[2][1] > grace  # waits for the close, bounded


def test_a_center_that_cannot_close_does_not_stop_down() -> None:
    center_actor._let_notices_go(_FakeRay(broken=True))  # logged, not raised: the kill comes next
