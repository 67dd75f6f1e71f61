"""User namespace id mappings: whether the container's user exists inside its namespace.

setresuid(2) to an unmapped id fails with a bare EINVAL in the child; checking the config's
uidMappings/gidMappings first gives the error with the id, before anything is created.

Idmapped bind mounts (runtime-spec 1.2 `mounts[].uidMappings`/`gidMappings`, options `idmap`
and `ridmap`) are prepared here too: `prepare_mounts` clones each source with open_tree(2) and
gives the copy the mappings of a user namespace (a new one holding the mount's own mappings,
else the container's) with mount_setattr(MOUNT_ATTR_IDMAP); the init attaches the copies.
"""

import posix

from . import fs

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any


def is_mapped(container_id: int, mappings: "list[dict[str, Any]]") -> bool:
    for m in mappings:
        first = int(m.get("containerID", 0))
        if first <= container_id < first + int(m.get("size", 0)):
            return True
    return False


def unmapped_user(user: "dict[str, Any]", uid_mappings: "list[dict[str, Any]]",
                  gid_mappings: "list[dict[str, Any]]") -> str | None:
    """The error for the first id of `user` (process.user) that the mappings leave out, or None."""
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    if not is_mapped(uid, uid_mappings):
        return f"unable to setup user: uid {uid} is unmapped in the user namespace (see linux.uidMappings)"
    for g in [gid, *(int(x) for x in user.get("additionalGids") or [])]:
        if not is_mapped(g, gid_mappings):
            return f"unable to setup user: gid {g} is unmapped in the user namespace (see linux.gidMappings)"
    return None


def creates_user_namespace(linux: "dict[str, Any]") -> bool:
    return any(n.get("type") == "user" and not n.get("path") for n in linux.get("namespaces") or [])


def has_user_namespace(linux: "dict[str, Any]") -> bool:
    return any(n.get("type") == "user" for n in linux.get("namespaces") or [])


# --- idmapped mounts (runtime-spec mounts[].uidMappings/gidMappings, options idmap/ridmap) ------

def wants_idmap(m: "dict[str, Any]") -> bool:
    opts = m.get("options") or []
    return bool(m.get("uidMappings") or m.get("gidMappings") or "idmap" in opts or "ridmap" in opts)


def check_mount(m: "dict[str, Any]", linux: "dict[str, Any]") -> str | None:
    """Why an idmapped mount cannot be made (runc 1.2's rules), or None."""
    dest = m.get("destination")
    opts = m.get("options") or []
    if not (m.get("type") == "bind" or "bind" in opts or "rbind" in opts):
        return f"invalid mount {dest}: idmapped mounts are only supported for bind mounts"
    if not has_user_namespace(linux):
        return f"invalid mount {dest}: idmapped mounts need the container to have a user namespace"
    if bool(m.get("uidMappings")) != bool(m.get("gidMappings")):
        return f"invalid mount {dest}: idmapped mounts need both uidMappings and gidMappings"
    for key in ("uidMappings", "gidMappings"):
        for x in m.get(key) or []:
            if not isinstance(x, dict) or int(x.get("size", 0)) <= 0:
                return f"invalid mount {dest}: {key} entries need a positive size"
    if not m.get("uidMappings") and creates_user_namespace(linux) and not linux.get("uidMappings"):
        return f"invalid mount {dest}: idmap without mappings needs linux.uidMappings"
    return None


def _map_text(mappings: "list[dict[str, Any]]") -> str:
    return "".join(f"{int(m['containerID'])} {int(m['hostID'])} {int(m['size'])}\n" for m in mappings)


def new_userns(uid_maps: "list[dict[str, Any]]", gid_maps: "list[dict[str, Any]]") -> int:
    """An O_RDONLY fd of a new user namespace with these mappings (held by a short-lived child
    that unshares, waits for us to write its maps, and exits; the fd keeps the namespace)."""
    from . import syscalls as sc
    ready_r, ready_w = posix.pipe()
    go_r, go_w = posix.pipe()
    pid = posix.fork()
    if pid == 0:
        try:
            posix.close(ready_r)
            posix.close(go_w)
            try:
                sc.unshare(sc.CLONE_NEWUSER)
                posix.write(ready_w, b"1")
            except OSError:
                posix.write(ready_w, b"E")
            posix.read(go_r, 1)
        finally:
            posix._exit(0)
    posix.close(ready_w)
    posix.close(go_r)
    try:
        if posix.read(ready_r, 1) != b"1":
            raise OSError(1, "unshare(CLONE_NEWUSER) failed")
        for kind, maps in (("uid", uid_maps), ("gid", gid_maps)):
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(_map_text(maps))
        return posix.open(f"/proc/{pid}/ns/user", posix.O_RDONLY | posix.O_CLOEXEC)
    finally:
        posix.close(ready_r)
        posix.close(go_w)
        posix.waitpid(pid, 0)


def _is_bind(m: "dict[str, Any]") -> bool:
    opts = m.get("options") or []
    return m.get("type") == "bind" or "bind" in opts or "rbind" in opts


def prepare_mounts(cfg: "dict[str, Any]", bundle: str, every_bind: bool = False) -> dict[int, int]:
    """Detached copies (open_tree) of the bind sources, by mount index: the ones that ask for an
    idmap, given it, and with `every_bind` all the others as they are.

    Made before the container enters its user namespace: giving a mount an idmap needs
    CAP_SYS_ADMIN over the source file system's namespace (the host's), which the container's
    init no longer has afterwards, and the namespace's root may not even reach a source (a
    directory of the host's root on the way, mode 0700: runc 1.2 opens sources early for the
    same reason). The init only attaches them (move_mount) in its mount namespace."""
    from . import syscalls as sc
    from .errors import PyruncError
    linux = cfg.get("linux") or {}
    todo = [(i, m) for i, m in enumerate(cfg.get("mounts") or [])
            if wants_idmap(m) or (every_bind and _is_bind(m))]
    if not todo:
        return {}
    userns_fds: dict[str, int] = {}  # one user namespace per distinct mapping (or joined path)

    def userns_for(m: "dict[str, Any]") -> int:
        """The user namespace whose mappings an idmapped mount takes: its own mappings, else
        the container's (the joined namespace, or the mappings of the one it creates)."""
        uid_maps, gid_maps = m.get("uidMappings"), m.get("gidMappings")
        joined = next((n.get("path") for n in linux.get("namespaces") or [] if n.get("type") == "user"), None)
        if not uid_maps and joined:
            key = "path:" + joined
            if key not in userns_fds:
                userns_fds[key] = posix.open(joined, posix.O_RDONLY | posix.O_CLOEXEC)
            return userns_fds[key]
        if not uid_maps:
            uid_maps, gid_maps = linux.get("uidMappings") or [], linux.get("gidMappings") or []
        key = _map_text(uid_maps) + "|" + _map_text(gid_maps or [])
        if key not in userns_fds:
            userns_fds[key] = new_userns(uid_maps, gid_maps or [])
        return userns_fds[key]

    trees: dict[int, int] = {}
    try:
        for i, m in todo:
            source = m.get("source") or ""
            if not source.startswith("/"):
                source = fs.join(bundle, source)
            opts = m.get("options") or []
            try:
                fd = sc.open_tree_clone(source, "rbind" in opts)
                trees[i] = fd
                if wants_idmap(m):
                    sc.mount_setattr_idmap(fd, userns_for(m), "ridmap" in opts)
            except OSError as e:
                idmapped = wants_idmap(m)
                raise PyruncError(f"{'idmapped ' if idmapped else ''}mount {m.get('destination')} from "
                                  f"{source}: {e.strerror}"
                                  + (" (the file system does not support idmapped mounts)"
                                     if idmapped and e.errno == 22 else "")) from None
        return trees
    except BaseException:
        for fd in trees.values():
            posix.close(fd)
        raise
    finally:
        for fd in userns_fds.values():
            posix.close(fd)
