"""Plain coercion for the CLI's simple parameters, so that a command does not import pydantic.

Typer >= 0.29 coerces every option value through a pydantic ``TypeAdapter``: the first ``str`` or ``int``
option of a command imports pydantic and builds a schema, ~150 ms of a ~350 ms ``dlnest-ray tasks`` on
the 2-core reference machine (issue 16). The CLI's parameters are ``str``, ``int``, ``float``, ``bool``,
``Path`` and lists of those, with no parser, bounds, choices or formats; their coercion is ``str``,
``int()``, ``float()`` and Typer's own path checks. :func:`install` makes Typer give each such parameter
a plain runtime coercion. Every other parameter, and a Typer without
this machinery (older releases coerce with click, without pydantic), keeps Typer's own. :func:`install`
is called by the CLI's ``main`` only: importing this module changes nothing.

Contract: a value this module accepts is the value Typer would have produced; a value it refuses is
refused with click's usual ``Invalid value for '--opt': ...`` usage error (exit 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, get_args, get_origin

log = logging.getLogger(__name__)

try:  # Typer's private runtime-coercion layer (0.29+); absent in older releases, which need none of this
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover - depends on the installed typer
    RuntimeParam = None  # type: ignore[assignment,misc]

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}
_LEAVES: tuple[type, ...] = (str, int, float, bool, Path)
# ParameterInfo fields whose non-default value asks for more than a plain conversion
_SPECIAL = ("parser", "min", "max", "clamp", "formats", "mode", "encoding", "path_type")
_PATH_SPECIAL = ("exists", "writable", "resolve_path", "allow_dash")


def _leaf(annotation: Any) -> type | None:
    """The element type of ``T`` or ``list[T]`` when T is plain, else None."""
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation) or (None,)
    return annotation if annotation in _LEAVES else None


def plain(annotation: Any, info: Any) -> bool:
    """Whether a parameter of this annotation and ``ParameterInfo`` needs nothing but a plain conversion."""
    leaf = _leaf(annotation)
    if leaf is None or any(getattr(info, name, None) not in (None, False) for name in _SPECIAL):
        return False
    return leaf is not Path or not any(getattr(info, name, False) for name in _PATH_SPECIAL)


def convert(leaf: type, value: Any, param: Any, ctx: Any) -> Any:
    """One value as ``leaf``; raises click's ``BadParameter`` with a one-line reason."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if leaf is str:
        return value if isinstance(value, str) else str(value)
    if leaf is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
    if leaf is Path:
        path = value if isinstance(value, Path) else Path(value)
        return coerce_cli_path(
            path, param.type_descriptor.parameter_info, path_type=Path, param=param, ctx=ctx
        )
    if isinstance(value, leaf) and not isinstance(value, bool):
        return value
    try:
        return leaf(value)
    except (TypeError, ValueError):
        kind = "integer" if leaf is int else "number"
        raise BadParameter(f"{value!r} is not a valid {kind}.", ctx=ctx, param=param) from None


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class PlainRuntimeParam(RuntimeParam):
        """Typer's runtime coercion for a plain annotation, without a pydantic ``TypeAdapter``."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            annotation: Any = self.annotation
            leaf = _leaf(annotation)
            assert leaf is not None, annotation
            if get_origin(annotation) is list:
                items = value if isinstance(value, (list, tuple)) else [value]
                return [convert(leaf, item, param, ctx) for item in items]
            return convert(leaf, value, param, ctx)


def install() -> bool:
    """Make Typer build a :class:`PlainRuntimeParam` for every plain parameter of this process's commands.

    Typer builds a parameter's runtime coercion lazily (``typer.core.build_runtime_param``, also for the
    help option it creates per command); this wraps that builder once. Returns whether it is installed:
    False where the installed Typer coerces without pydantic (nothing to do) or has moved the builder.
    """
    if RuntimeParam is None:
        return False
    core: Any = import_module("typer.core")
    build = getattr(core, "build_runtime_param", None)
    if build is None:  # pragma: no cover - a Typer that reorganised its internals: keep its coercion
        log.debug("typer.core.build_runtime_param not found; Typer's own coercion stays")
        return False
    if getattr(build, "_dlnest_plain", False):
        return True

    def build_plain(descriptor: Any) -> Any:
        if descriptor.file_annotation is None and plain(descriptor.annotation, descriptor.parameter_info):
            return PlainRuntimeParam(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
            )
        return build(descriptor)

    build_plain._dlnest_plain = True  # type: ignore[attr-defined]
    core.build_runtime_param = build_plain
    return True
