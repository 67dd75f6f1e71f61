"""Single-use tokens for streaming URLs, as the kubelet's request cache hands them out.

Exec, Attach and PortForward store their request here and answer with a URL carrying the
token; the client's connection to that URL consumes it. A token is random, works once and
expires after `ttl` seconds; at most `capacity` wait at a time, and a new request when the
cache is full of live tokens is refused rather than evicting one a client is about to use.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_TTL = 60.0  # the kubelet's CacheTTL
DEFAULT_CAPACITY = 1000  # the kubelet's maxInFlight


class CacheFull(Exception):
    """Too many streaming requests are waiting for their client."""


@dataclass
class _Entry(Generic[T]):
    request: T
    expires: float


class RequestCache(Generic[T]):
    def __init__(self, ttl: float = DEFAULT_TTL, capacity: int = DEFAULT_CAPACITY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or capacity < 1:
            raise ValueError("ttl must be positive and capacity at least 1")
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def insert(self, request: T) -> str:
        self._expire()
        if len(self._entries) >= self.capacity:
            raise CacheFull(f"{len(self._entries)} streaming requests are already waiting for "
                            f"their client (at most {self.capacity})")
        token = secrets.token_urlsafe(16)  # 128 random bits, URL-safe
        self._entries[token] = _Entry(request, self._clock() + self.ttl)
        return token

    def consume(self, token: str) -> T | None:
        """The request stored under token, once; None when unknown, used or expired."""
        self._expire()
        entry = self._entries.pop(token, None)
        return entry.request if entry is not None else None

    def _expire(self) -> None:
        now = self._clock()
        # entries are in insertion order and share one ttl, so expired ones lead
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[token]
