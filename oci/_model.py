"""JSON <-> dataclass codec shared by the runtime-spec model and the runtime state.

Each model is a kw-only dataclass whose fields map to JSON keys (camelCase of the field name
unless ``metadata={"json": ...}`` says otherwise). Keys the model does not know are kept in
``extra`` and written back, so a config.json produced by a newer tool survives a round trip.
Fields that are ``None`` are omitted on output, which keeps "absent" distinct from "empty".
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Self

_NoneType = type(None)


class SpecError(ValueError):
    """The document does not fit the model, or fails validation. ``path`` locates the field."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclasses.dataclass(kw_only=True)
class Model:
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    @functools.cache
    def _fields(cls) -> tuple[tuple[str, str, Any, bool], ...]:
        """(python name, JSON key, type, required) per field."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append((f.name, f.metadata.get("json", _camel(f.name)), hints[f.name], required))
        return tuple(out)

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        if not isinstance(data, dict):
            raise SpecError(f"expected an object, got {type(data).__name__}", path)
        kwargs: dict[str, Any] = {}
        known = set()
        for name, key, tp, required in cls._fields():
            known.add(key)
            sub = f"{path}.{key}" if path else key
            if key in data:
                kwargs[name] = _decode(tp, data[key], sub)
            elif required:
                raise SpecError("required field is missing", sub)
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, key, _, _ in self._fields():
            value = getattr(self, name)
            if value is not None:
                out[key] = _encode(value)
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out


def _decode(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not _NoneType]
        if len(args) == 1:
            return _decode(args[0], value, path)
        for arg in args:  # e.g. int | str: first one that accepts the value
            try:
                return _decode(arg, value, path)
            except SpecError:
                continue
        raise SpecError(f"unexpected value {value!r}", path)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"expected an array, got {type(value).__name__}", path)
        (item,) = typing.get_args(tp)
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"expected an object, got {type(value).__name__}", path)
        _, item = typing.get_args(tp)
        return {k: _decode(item, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Model):
        return tp.from_dict(value, path)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"expected a boolean, got {value!r}", path)
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(f"expected an integer, got {value!r}", path)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"expected a string, got {value!r}", path)
        return value
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def json_name(key: str) -> dict[str, str]:
    """Field metadata for a JSON key that is not the camelCase of the Python name."""
    return {"json": key}
