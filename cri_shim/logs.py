"""The daemon's logs: text (the default) or one JSON object per line (`--log-format json`),
with the pod and container ids of the request being served on every line that concerns it,
and the level switchable at runtime (SIGUSR1: debug, and back)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The ids of what the current request concerns; asyncio tasks copy the context they start in,
# so work a request starts is logged with its ids too.
_ids: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("cri_shim_log_ids",
                                                                                    default=())
_configured_level = logging.INFO


Ids = tuple[tuple[str, str], ...]  # (key, id) pairs, as the context holds them


def enter(ids: Ids) -> contextvars.Token[Ids] | None:
    """Log lines from here on carry `ids` too (a later key replaces an earlier one) until
    `leave` is given what this returned. What every call does around its handler: no objects
    made when the context has no ids yet, which is the case for a call."""
    if not ids:
        return None
    current = _ids.get()
    return _ids.set(tuple({**dict(current), **dict(ids)}.items()) if current else ids)


def leave(token: contextvars.Token[Ids] | None) -> None:
    if token is not None:
        _ids.reset(token)


class about:  # noqa: N801 - used as a function: `with logs.about(pod_id=...)`
    """Log lines inside carry these ids (empty ones are left out)."""

    __slots__ = ("_new", "_token")

    def __init__(self, **ids: str) -> None:
        self._new: Ids = tuple((k, v) for k, v in ids.items() if v)
        self._token: contextvars.Token[Ids] | None = None

    def __enter__(self) -> None:
        self._token = enter(self._new)

    def __exit__(self, *exc: object) -> None:
        leave(self._token)


_ID_FIELDS = (("pod_sandbox_id", "pod_id"), ("container_id", "container_id"))
_fields_of: dict[type, tuple[tuple[str, str], ...]] = {}  # a request type -> its id fields


def request_ids(request: Any) -> Ids:
    """pod_id and container_id from a CRI request's fields, where it has them, as `enter`
    takes them."""
    kind = type(request)
    fields = _fields_of.get(kind)
    if fields is None:
        fields = _fields_of[kind] = tuple(
            (f, key) for f, key in _ID_FIELDS if isinstance(getattr(request, f, None), str))
    if not fields:
        return ()
    return tuple((key, value) for field, key in fields if (value := getattr(request, field)))


class _IdsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _ids.get():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("pod_id", "container_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Our loggers at level; grpc's and asyncio's internals only when they warn."""
    global _configured_level
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_IdsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    _configured_level = logging.getLevelName(level.upper())
    logging.getLogger("cri_shim").setLevel(_configured_level)


def toggle_debug() -> None:
    """SIGUSR1: debug if not already, else back to the configured level."""
    ours = logging.getLogger("cri_shim")
    new = _configured_level if ours.level == logging.DEBUG else logging.DEBUG
    ours.setLevel(new)
    ours.warning("log level now %s (SIGUSR1)", logging.getLevelName(new).lower())
