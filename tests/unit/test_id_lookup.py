"""The id index both managers share: exact id or unique prefix, name reservation, labels."""

from __future__ import annotations

import pytest

from cri_shim.errors import InvalidArgument, NotFound
from cri_shim.id_lookup import IdIndex, labels_match


def test_exact_id_or_unique_prefix() -> None:
    idx: IdIndex[str] = IdIndex("container")
    idx.add("abc123", "one", "pod/a/0")
    idx.add("abd456", "two", "pod/b/0")
    assert idx.get("abc123") == "one" and idx.get("abd") == "two" and idx.exact("abd") is None
    with pytest.raises(InvalidArgument, match="ambiguous"):
        idx.get("ab")
    with pytest.raises(InvalidArgument, match="container id is empty"):
        idx.get("")
    with pytest.raises(NotFound, match="container 'zz' not found"):
        idx.get("zz")
    assert idx.find("zz") is None and len(idx) == 2


def test_names_are_reserved_until_their_owner_goes() -> None:
    idx: IdIndex[str] = IdIndex("pod sandbox")
    idx.add("p1", "one", "name")
    assert idx.name_owner("name") == "p1" and idx.name_owner("other") is None
    idx.remove("p2", "name")  # not the owner: the reservation stays
    assert idx.name_owner("name") == "p1"
    idx.remove("p1", "name")
    assert idx.name_owner("name") is None and idx.values() == []


def test_label_selector() -> None:
    assert labels_match({"a": "1", "b": "2"}, {"a": "1"})
    assert not labels_match({"a": "1"}, {"a": "2"}) and not labels_match({}, {"a": ""})
    assert labels_match({}, {})


def test_members_of_a_group_follow_adds_and_removals() -> None:
    idx: IdIndex[tuple[str, str]] = IdIndex("container", lambda c: c[0])  # (pod id, name)
    idx.add("c1", ("p1", "a"), "p1/a")
    idx.add("c2", ("p2", "b"), "p2/b")
    idx.add("c3", ("p1", "c"), "p1/c")
    assert idx.members("p1") == [("p1", "a"), ("p1", "c")] and idx.members("none") == []
    idx.add("c1", ("p2", "a"), "p2/a")  # the same id again, in another group: moves
    assert idx.members("p1") == [("p1", "c")] and idx.members("p2") == [("p2", "b"), ("p2", "a")]
    idx.remove("c3", "p1/c")
    idx.remove("c9", "p1/x")  # not there: nothing changes
    assert idx.members("p1") == [] and "p1" not in idx._groups
    plain: IdIndex[str] = IdIndex("pod sandbox")  # no group: no members
    plain.add("p1", "one", "name")
    assert plain.members("p1") == []
