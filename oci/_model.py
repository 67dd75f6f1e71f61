"""JSON <-> typed object codec shared by the runtime-spec model and the runtime state.

A model is a class deriving from ``Model`` with annotated fields; fields map to JSON keys (the
camelCase of the field name unless ``field(json=...)`` says otherwise). Keys the model does not
know are kept in ``extra`` and written back, so a config.json produced by a newer tool survives a
round trip. Fields that are ``None`` are omitted on output, which keeps "absent" distinct from
"empty".

Why not @dataclass: generating ~40 dataclasses costs ~25 ms at import. (pyrunc, which starts
afresh for every runtime command, does not use this model at all: it reads config.json as plain
dicts; see ARCHITECTURE.md.) Here ``__init_subclass__`` records the fields and a shared generic
``__init__`` does the work; ``dataclass_transform`` keeps type checkers seeing keyword-only
dataclass-style constructors.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Self, dataclass_transform

_NoneType = type(None)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class SpecError(ValueError):
    """The document does not fit the model, or fails validation. ``path`` locates the field."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class _FieldSpec:
    __slots__ = ("default", "default_factory", "json")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | Any, json: str | None) -> None:
        self.default = default
        self.default_factory = default_factory
        self.json = json


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          json: str | None = None) -> Any:
    """Field options: a default, a default factory, or a JSON key that is not the camelCase name."""
    return _FieldSpec(default, default_factory, json)


class _Field(NamedTuple):
    name: str
    key: str
    default: Any
    factory: Any


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
class Model:
    extra: dict[str, Any] = field(default_factory=dict)  # unknown JSON keys, written back as they came
    _model_fields: ClassVar[tuple[_Field, ...]] = ()
    _model_types: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = {f.name: f for f in cls._model_fields}
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if name == "extra" or name.startswith("_") or str(annotation).startswith(("ClassVar", "typing.")):
                continue
            value = cls.__dict__.get(name, MISSING)
            if isinstance(value, _FieldSpec):
                fields[name] = _Field(name, value.json or _camel(name), value.default, value.default_factory)
                if value.default is MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, value.default)
            else:
                fields[name] = _Field(name, _camel(name), value, MISSING)
        cls._model_fields = tuple(fields.values())
        cls._model_types = None

    def __init__(self, **kwargs: Any) -> None:
        for f in self._model_fields:
            if f.name in kwargs:
                value = kwargs.pop(f.name)
            elif f.factory is not MISSING:
                value = f.factory()
            elif f.default is not MISSING:
                value = f.default
            else:
                raise TypeError(f"{type(self).__name__}() missing required keyword argument {f.name!r}")
            object.__setattr__(self, f.name, value)
        extra = kwargs.pop("extra", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(kwargs)}")
        self.extra = dict(extra) if extra else {}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self._model_fields) and (
            self.extra == other.extra)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def __repr__(self) -> str:
        parts = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._model_fields)
        return f"{type(self).__name__}({parts})"

    @classmethod
    def _types(cls) -> dict[str, Any]:
        """Resolved field types, computed on first use (not at import)."""
        if cls._model_types is None:
            hints = typing.get_type_hints(cls)  # each class's annotations in its own module
            cls._model_types = {f.name: hints[f.name] for f in cls._model_fields}
        return cls._model_types

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        if not isinstance(data, dict):
            raise SpecError(f"expected an object, got {type(data).__name__}", path)
        types_ = cls._types()
        kwargs: dict[str, Any] = {}
        known = set()
        for f in cls._model_fields:
            known.add(f.key)
            sub = f"{path}.{f.key}" if path else f.key
            if f.key in data:
                kwargs[f.name] = _decode(types_[f.name], data[f.key], sub)
            elif f.default is MISSING and f.factory is MISSING:
                raise SpecError("required field is missing", sub)
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self._model_fields:
            value = getattr(self, f.name)
            if value is not None:
                out[f.key] = _encode(value)
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
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"expected a boolean, got {value!r}", path)
    elif tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(f"expected an integer, got {value!r}", path)
    elif tp is str:
        if not isinstance(value, str):
            raise SpecError(f"expected a string, got {value!r}", path)
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value
