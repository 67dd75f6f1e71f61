"""User namespace id mappings: whether the container's user exists inside its namespace.

setresuid(2) to an unmapped id fails with a bare EINVAL in the child; checking the config's
uidMappings/gidMappings first gives the error with the id, before anything is created.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any


def is_mapped(container_id: int, mappings: list[dict[str, Any]]) -> bool:
    for m in mappings:
        first = int(m.get("containerID", 0))
        if first <= container_id < first + int(m.get("size", 0)):
            return True
    return False


def unmapped_user(user: dict[str, Any], uid_mappings: list[dict[str, Any]],
                  gid_mappings: list[dict[str, Any]]) -> str | None:
    """The error for the first id of `user` (process.user) that the mappings leave out, or None."""
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    if not is_mapped(uid, uid_mappings):
        return f"unable to setup user: uid {uid} is unmapped in the user namespace (see linux.uidMappings)"
    for g in [gid, *(int(x) for x in user.get("additionalGids") or [])]:
        if not is_mapped(g, gid_mappings):
            return f"unable to setup user: gid {g} is unmapped in the user namespace (see linux.gidMappings)"
    return None


def creates_user_namespace(linux: dict[str, Any]) -> bool:
    return any(n.get("type") == "user" and not n.get("path") for n in linux.get("namespaces") or [])


def has_user_namespace(linux: dict[str, Any]) -> bool:
    return any(n.get("type") == "user" for n in linux.get("namespaces") or [])
