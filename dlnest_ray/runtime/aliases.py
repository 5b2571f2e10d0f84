"""PEP 8 names with DLNest's camelCase names accepted as aliases, in both directions.

A base class (one with ``_DLNEST_BASE = True`` in its own body) defines only the snake_case methods:
the names the framework calls and a type checker sees. It lists its ``(snake, camel)`` pairs, its
bases' included, in ``_ALIASES``. This module is the one place where the camelCase names are made:

- *calling* either name: each base gets, for every pair it lacks a camelCase attribute for, a
  camelCase method that calls the snake_case one;
- *overriding* either name: when the most derived definition of a pair in a user class is the
  camelCase one, the snake_case name is pointed at it, so the framework's call reaches the user's code.

Neither name recurses into the other: a camelCase override that calls ``super().<camelCase>()``, as
DLNest code does (``d = super().getSaveDict()``), reaches the snake_case method of the classes above
it, never the override again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["Aliased", "overrides"]


class Aliased:
    """Mixin: subclasses list ``(snake, camel)`` pairs in ``_ALIASES``; bases set ``_DLNEST_BASE = True``."""

    _ALIASES: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _is_base(cls):
            _add_camel_methods(cls)
        else:
            _route_camel_overrides(cls)


def _is_base(klass: type) -> bool:
    return bool(vars(klass).get("_DLNEST_BASE"))


def _add_camel_methods(cls: type[Aliased]) -> None:
    """Give a base class a camelCase method for each pair that has none yet."""
    for snake, camel in cls._ALIASES:
        if not hasattr(cls, snake):  # a typo in a table must not pass silently
            raise TypeError(f"{cls.__name__} lists the alias {camel!r} of {snake!r}, which it lacks")
        if not hasattr(cls, camel):
            setattr(cls, camel, _camel_method(snake, camel))


def _route_camel_overrides(cls: type[Aliased]) -> None:
    """Point ``snake`` at the user's ``camel`` where that is the most derived definition of the pair."""
    for snake, camel in cls._ALIASES:
        for klass in cls.__mro__:
            own = vars(klass)
            if snake in own or camel in own:
                if camel in own and snake not in own and not _is_base(klass):
                    setattr(cls, snake, own[camel])
                break


def _camel_method(snake: str, camel: str) -> Callable[..., Any]:
    """A base's camelCase method: calls the snake_case method below any user ``camel`` override, so
    that ``super().<camel>()`` from such an override reaches the base's code (module docstring)."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        own = vars(self)  # the bases have no __slots__: every instance has a __dict__
        if snake in own:  # an instance attribute replaces the method, as for any attribute lookup
            return own[snake](*args, **kwargs)
        impl = _snake_below_camel_overrides(type(self), snake, camel)
        bind = getattr(impl, "__get__", None)  # a function (or staticmethod...) binds; a callable object not
        return (bind(self, type(self)) if bind is not None else impl)(*args, **kwargs)

    method.__name__ = camel
    method.__qualname__ = camel
    method.__doc__ = f"DLNest's name; same as :meth:`{snake}`."
    return method


def _snake_below_camel_overrides(cls: type, snake: str, camel: str) -> Any:
    """The first ``snake`` in ``cls``'s MRO after the last user class that defines ``camel``.

    Reaching a base's camelCase method means no user ``camel`` before it answered (a plain call finds
    the user's ``camel`` itself), or that ``super()`` went past them; the ``snake`` of those classes is
    the user's ``camel`` (routed at class creation), so it must be skipped.
    """
    mro = cls.__mro__
    start = 0
    for i, klass in enumerate(mro):
        if camel in vars(klass) and not _is_base(klass):
            start = i + 1
    for klass in mro[start:]:
        if snake in vars(klass):
            return vars(klass)[snake]
    raise AttributeError(f"{cls.__name__} has no method {snake!r} (called as {camel!r})")


def overrides(obj: object, name: str, base: type) -> bool:
    """True when ``type(obj)`` defines ``name`` somewhere below ``base`` in its MRO (a camelCase
    override counts as its snake_case name: it was routed there)."""
    for klass in type(obj).__mro__:
        if klass is base or _is_base(klass):
            return False
        if name in vars(klass):
            return True
    return False
