"""The id index both managers keep: objects by full id or unique id prefix (as crictl lets users
type them), the names they reserve, and CRI's label filter. containerd's store has the same
pieces as truncindex and a name registrar."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

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


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """CRI's label_selector: every key present with exactly that value."""
    return all(labels.get(k) == v for k, v in selector.items())


class IdIndex(Generic[T]):
    """In-memory objects by id with their reserved names (name key -> id), and, given `group`
    (an object's pod id), by group too. No I/O, no locks: List and Status calls read it
    directly."""

    def __init__(self, kind: str, group: Callable[[T], str] | None = None) -> None:
        self.kind = kind
        self._objects: dict[str, T] = {}
        self._names: dict[str, str] = {}
        self._group = group
        self._groups: dict[str, dict[str, T]] = {}  # group -> id -> object, in insertion order

    def __len__(self) -> int:
        return len(self._objects)

    def values(self) -> list[T]:
        """A snapshot: callers may await while walking it."""
        return list(self._objects.values())

    def exact(self, object_id: str) -> T | None:
        """The object with exactly this id, or None."""
        return self._objects.get(object_id)

    def get(self, wanted: str) -> T:
        """By full id or unique prefix; NotFound or InvalidArgument naming the kind and id."""
        return by_id_or_prefix(self._objects, wanted, self.kind)

    def find(self, wanted: str) -> T | None:
        """As get, but None when there is no such object."""
        try:
            return self.get(wanted)
        except NotFound:
            return None

    def name_owner(self, name_key: str) -> str | None:
        """The id that reserved name_key, or None when the name is free."""
        return self._names.get(name_key)

    def members(self, group: str) -> list[T]:
        """The objects of `group` (the index was made with `group`), oldest first."""
        return list(self._groups.get(group, {}).values())

    def add(self, object_id: str, obj: T, name_key: str) -> None:
        """Index the object and reserve its name."""
        old = self._objects.get(object_id)
        if old is not None:
            self._ungroup(object_id, old)
        self._objects[object_id] = obj
        self._names[name_key] = object_id
        if self._group is not None:
            self._groups.setdefault(self._group(obj), {})[object_id] = obj

    def remove(self, object_id: str, name_key: str) -> None:
        """Forget the object and release its name if it still holds it."""
        obj = self._objects.pop(object_id, None)
        if obj is not None:
            self._ungroup(object_id, obj)
        if self._names.get(name_key) == object_id:
            del self._names[name_key]

    def _ungroup(self, object_id: str, obj: T) -> None:
        if self._group is None:
            return
        key = self._group(obj)
        members = self._groups.get(key)
        if members is not None:
            members.pop(object_id, None)
            if not members:
                del self._groups[key]
