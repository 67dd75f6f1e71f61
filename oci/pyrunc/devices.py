"""/dev inside the container: device nodes from the spec plus the default set, and the
conventional symlinks."""

import posix
import stat

from . import fs
from . import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

DEFAULT_DEVICES: "list[dict[str, Any]]" = [
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
    {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
    {"path": "/dev/full", "type": "c", "major": 1, "minor": 7, "fileMode": 0o666},
    {"path": "/dev/random", "type": "c", "major": 1, "minor": 8, "fileMode": 0o666},
    {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9, "fileMode": 0o666},
    {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0, "fileMode": 0o666},
]
_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def needs_setup(mounts: "list[dict[str, Any]]") -> bool:
    """runc leaves /dev alone when the user bind-mounts one."""
    for m in mounts:
        opts = m.get("options") or []
        if m.get("destination", "").rstrip("/") == "/dev" and (m.get("type") == "bind" or "bind" in opts
                                                             or "rbind" in opts):
            return False
    return True


def all_devices(spec_devices: "list[dict[str, Any]]") -> "list[dict[str, Any]]":
    seen = {d["path"] for d in spec_devices}
    return list(spec_devices) + [d for d in DEFAULT_DEVICES if d["path"] not in seen]


def create_devices(rootfs: str, devices: "list[dict[str, Any]]", userns: bool) -> None:
    from .mounts import secure_join
    old = posix.umask(0)
    try:
        for d in devices:
            dest = secure_join(rootfs, d["path"])
            fs.makedirs(fs.dirname(dest), 0o755)
            if userns:
                # mknod is not allowed in a user namespace: bind the host node instead
                if not fs.exists(dest):
                    posix.close(posix.open(dest, posix.O_CREAT | posix.O_WRONLY | posix.O_CLOEXEC, 0o666))
                sc.mount(d["path"], dest, None, sc.MS_BIND, None)
                continue
            mode = (d.get("fileMode") or 0o666) | _TYPES.get(d.get("type", "c"), stat.S_IFCHR)
            if fs.lexists(dest):
                posix.unlink(dest)
            posix.mknod(dest, mode, posix.makedev(d.get("major", 0), d.get("minor", 0)))
            posix.chown(dest, d.get("uid", 0), d.get("gid", 0))
    finally:
        posix.umask(old)


def create_symlinks(rootfs: str) -> None:
    links = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
             ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx")]
    if fs.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    for target, name in links:
        path = fs.join(rootfs, "dev", name)
        if name == "ptmx" and fs.lexists(path):
            posix.unlink(path)
        if not fs.lexists(path):
            posix.symlink(target, path)


# always allowed, as runc does: mknod of anything, the default nodes, ptys and the console
_ALWAYS = [("c", None, None, "m"), ("b", None, None, "m"), ("c", 1, 3, "rwm"), ("c", 1, 8, "rwm"),
           ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 9, "rwm"),
           ("c", 5, 1, "rwm"), ("c", 136, None, "rwm"), ("c", 5, 2, "rwm")]


def cgroup_rules(spec_rules: "list[dict[str, Any]]",
                 spec_devices: "list[dict[str, Any]]") -> "list[dict[str, Any]]":
    rules = list(spec_rules)
    rules += [{"allow": True, "type": t, "major": ma, "minor": mi, "access": acc}
              for t, ma, mi, acc in _ALWAYS]
    rules += [{"allow": True, "type": d.get("type", "c"), "major": d.get("major"), "minor": d.get("minor"),
               "access": "rwm"} for d in spec_devices if d.get("type", "c") in ("c", "b", "u")]
    return rules
