"""PEP 8 names with DLNest's camelCase names accepted as aliases, in both directions.

A base class defines the snake_case method (the one the framework calls) and a camelCase forwarder (so
user code may *call* either). A user subclass may *override* either: when the most derived definition
of a pair is the camelCase one, the snake_case name is pointed at it, so the framework calls the user's
code. Neither name recurses into the other.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["Aliased"]


class Aliased:
    """Mixin: subclasses list ``(snake, camel)`` pairs in ``_ALIASES``; bases set ``_DLNEST_BASE = True``."""

    _ALIASES: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_DLNEST_BASE"):
            return
        for snake, camel in cls._ALIASES:
            for klass in cls.__mro__:
                own = klass.__dict__
                if snake in own or camel in own:
                    if camel in own and snake not in own and not own.get("_DLNEST_BASE"):
                        setattr(cls, snake, own[camel])
                    break


def forward(snake: str) -> Any:
    """A camelCase method body that calls the snake_case one."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, snake)(*args, **kwargs)

    method.__name__ = f"alias_of_{snake}"
    method.__doc__ = f"DLNest name; same as :meth:`{snake}`."
    return method


def overrides(obj: object, name: str, base: type) -> bool:
    """True when ``type(obj)`` defines ``name`` somewhere below ``base`` in its MRO."""
    for klass in type(obj).__mro__:
        if klass is base or klass.__dict__.get("_DLNEST_BASE"):
            return False
        if name in klass.__dict__:
            return True
    return False
