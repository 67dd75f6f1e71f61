"""Looking objects up by full id or unique id prefix, as crictl lets users type them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from cri_shim.errors import InvalidArgument, NotFound

T = TypeVar("T")


def by_id_or_prefix(index: Mapping[str, T], wanted: str, kind: str) -> T:
    """The object; NotFound or InvalidArgument (empty, ambiguous) naming `kind` and the id."""
    if not wanted:
        raise InvalidArgument(f"{kind} id is empty")
    found = index.get(wanted)
    if found is not None:
        return found
    matches = [obj for oid, obj in index.items() if oid.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidArgument(f"{kind} id prefix {wanted!r} is ambiguous")
    raise NotFound(f"{kind} {wanted!r} not found")
