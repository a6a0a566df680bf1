"""Settings from ``FOREBAY_*`` environment variables: one reader for every settings object, and
the one resolution of the backend URL.

A settings object is a frozen dataclass. :func:`from_env` reads one variable per field and
converts its text by the field's type:

=============================  ===========================================================
field type                     the variable's text
=============================  ===========================================================
``str``                        as given, without surrounding spaces
``int``, ``float``             a number (``8``, ``2.5``); a ``*_s`` field counts seconds
``bool``                       ``true``, ``1``, ``yes``, ``on`` or ``false``, ``0``, ``no``, ``off``
``timedelta``                  a number of seconds
``Literal["a", "b"]``          one of the values, in any case
``tuple[str, ...]``            items separated by commas (``tuple[int, ...]``: numbers)
``X | None``                   as ``X``
=============================  ===========================================================

The variable is ``FOREBAY_`` and the field's name in capitals (``shutdown_grace_s`` is
``FOREBAY_SHUTDOWN_GRACE_S``) unless the field names another with :func:`variable`, or is not
read at all (:data:`NOT_FROM_ENV`). An unset or empty variable leaves the field's default. Every
mistake is a :class:`~forebay.errors.ConfigError` naming the variable and what it should hold;
the settings class checks the values themselves (ranges, combinations) in ``__post_init__``.

:func:`resolve_url` is where "which backend" is decided, for the app and for every command:
the URL given (``--url``), else ``FOREBAY_URL``, else the SQLite file ``./forebay.db``.

:func:`tenant_quotas_from_env` reads the app's tenant quotas, ``FOREBAY_TENANT_QUOTAS``
(``acme=1000,*=500``: at most 1000 unfinished jobs for ``acme``, 500 for every other tenant).
"""

from __future__ import annotations

import functools
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

from forebay.backends import DEFAULT_URL
from forebay.errors import ConfigError, InvalidPayload
from forebay.flow import check_tenant

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "NOT_FROM_ENV",
    "Variable",
    "check_quotas",
    "from_env",
    "parse_tenant_quotas",
    "resolve_url",
    "tenant_quotas_from_env",
    "variable",
]

S = TypeVar("S", bound="DataclassInstance")

_KEY = "forebay.settings"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def resolve_url(url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The backend URL: ``url`` when given, else ``FOREBAY_URL``, else :data:`DEFAULT_URL`."""
    environ = os.environ if env is None else env
    return url or environ.get("FOREBAY_URL") or DEFAULT_URL


TENANT_QUOTAS = "FOREBAY_TENANT_QUOTAS"
ANY_TENANT = "*"
"""The quota entry for every tenant without its own."""


def tenant_quotas_from_env(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """The tenant quotas ``FOREBAY_TENANT_QUOTAS`` gives (none when unset or empty)."""
    environ = os.environ if env is None else env
    return parse_tenant_quotas(environ.get(TENANT_QUOTAS, ""), name=TENANT_QUOTAS)


def parse_tenant_quotas(text: str, *, name: str = TENANT_QUOTAS) -> dict[str, int]:
    """``"acme=1000,*=500"`` as ``{"acme": 1000, "*": 500}``; ConfigError naming ``name`` and
    the entry for a bad one."""
    quotas: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        tenant, sep, cap = (part.strip() for part in entry.partition("="))
        if not sep or not cap.isdigit():
            raise ConfigError(
                f"{name}: bad entry {entry!r}: write TENANT=MAX_JOBS, e.g. 'acme=1000,*=500'"
            )
        if tenant in quotas:
            raise ConfigError(f"{name}: tenant {tenant!r} is given twice")
        quotas[tenant] = int(cap)
    return check_quotas(quotas, name=name)


def check_quotas(quotas: Mapping[str, int], *, name: str = "tenant_quotas") -> dict[str, int]:
    """``quotas`` as a dict, or ConfigError unless each key is a tenant name (or ``"*"``) and
    each value a whole number of at least 1."""
    checked = {}
    for tenant, cap in quotas.items():
        if tenant != ANY_TENANT:
            try:
                check_tenant(tenant)
            except InvalidPayload as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigError(
                f"{name}: the quota of {tenant!r} must be a whole number of at least 1, "
                f"not {cap!r}"
            )
        checked[tenant] = cap
    return checked


@dataclass(frozen=True, slots=True)
class Variable:
    """How :func:`from_env` reads one field (put in the field's metadata by :func:`variable`)."""

    name: str | None = None
    """The variable; None: the prefix and the field's name in capitals."""
    read: bool = True
    """False: the field is never read from the environment (only given in code)."""
    parse: Callable[[str], object] | None = None
    """Reads the text instead of the field's type (also an override given as text)."""
    at_least: float | None = None
    """The smallest number the variable may hold."""


def variable(
    name: str | None = None,
    *,
    parse: Callable[[str], object] | None = None,
    at_least: float | None = None,
) -> dict[str, Variable]:
    """Field metadata for a field read from ``name`` (or read with ``parse``, or bounded)::

    dataset: str = field(default="./forebay-dataset", metadata=variable("FOREBAY_DATASET"))
    """
    return {_KEY: Variable(name, parse=parse, at_least=at_least)}


NOT_FROM_ENV: Mapping[str, Variable] = types.MappingProxyType({_KEY: Variable(read=False)})
"""Field metadata for a field that is never read from the environment."""


def from_env(
    cls: type[S],
    env: Mapping[str, str] | None = None,
    *,
    prefix: str = "FOREBAY_",
    given: Mapping[str, object] | None = None,
) -> S:
    """``cls`` built from the variables in ``env`` (default: the process's environment), then
    from ``given`` (flags, which win; a value of None is not given: the variable or the default
    stays)."""
    environ = os.environ if env is None else env
    given = given or {}
    readers = _readers(cls, prefix)
    values: dict[str, object] = {}
    for reader in readers.values():
        raw = environ.get(reader.variable)
        if raw is not None and raw.strip():
            values[reader.field] = reader.read(raw.strip())
    unknown = sorted(set(given) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"{cls.__name__} has no setting {', '.join(unknown)}")
    for name, value in given.items():
        if value is not None:
            parse = readers[name].spec.parse if name in readers else None
            values[name] = parse(value) if parse is not None and isinstance(value, str) else value
    return cls(**values)


@dataclass(frozen=True, slots=True)
class _Reader:
    field: str
    variable: str
    spec: Variable
    convert: Callable[[str], object]

    def read(self, text: str) -> object:
        value = self.convert(text)
        bound = self.spec.at_least
        if bound is not None and isinstance(value, int | float) and value < bound:
            raise ConfigError(f"{self.variable} must be at least {bound:g}")
        return value


@functools.cache
def _readers(cls: type[DataclassInstance], prefix: str) -> dict[str, _Reader]:
    """One reader per field read from the environment (worked out once per class)."""
    hints = typing.get_type_hints(cls)
    readers = {}
    for f in fields(cls):
        spec = f.metadata.get(_KEY, Variable())
        if not spec.read:
            continue
        name = spec.name or f"{prefix}{f.name.upper()}"
        convert = spec.parse or _converter(hints[f.name], name, seconds=f.name.endswith("_s"))
        readers[f.name] = _Reader(f.name, name, spec, convert)
    return readers


def _converter(kind: object, name: str, *, seconds: bool) -> Callable[[str], object]:
    """How to read the text of the variable ``name`` for a field of type ``kind``."""
    kind = _without_none(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is str:
        return str
    if kind is bool:
        return functools.partial(_boolean, name)
    if kind is int or kind is float or kind is timedelta:
        return functools.partial(_number, name, kind, seconds or kind is timedelta)
    if origin is Literal:
        return functools.partial(_choice, name, tuple(str(a) for a in args))
    if origin in (tuple, list) and args and args[0] in (str, int):
        return functools.partial(_items, name, origin, args[0])
    raise TypeError(f"{name}: from_env cannot read a field of type {kind!r}; give it a parse")


def _without_none(kind: object) -> object:
    """``X`` for ``X | None`` (an unset variable keeps the default, None or not)."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return kind


def _boolean(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={text!r}: use true or false")


def _number(name: str, kind: type, seconds: bool, text: str) -> object:
    try:
        if kind is int:
            return int(text)
        value = float(text)
        return timedelta(seconds=value) if kind is timedelta else value
    except (ValueError, OverflowError):
        what = "a whole number" if kind is int else "seconds" if seconds else "a number"
        raise ConfigError(f"{name}={text!r} is not a number: give {what}") from None


def _choice(name: str, choices: tuple[str, ...], text: str) -> str:
    lowered = text.lower()
    if lowered not in choices:
        raise ConfigError(f"{name}={text!r}: use {' or '.join(choices)}")
    return lowered


def _items(name: str, container: type, item: type, text: str) -> object:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if item is int:
        try:
            return container(int(part) for part in parts)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: give whole numbers separated by commas") from None
    return container(parts)
