"""Mounts inside the new mount namespace: spec mounts, rootfs preparation, pivot_root,
masked and read-only paths. Option parsing is pure (`parse_options`)."""

import posix
import stat

from . import fs
from . import syscalls as sc
from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

# option -> (clear?, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID), "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV), "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC), "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS), "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC), "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK), "nomand": (True, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "atime": (True, sc.MS_NOATIME),
    "nodiratime": (False, sc.MS_NODIRATIME), "diratime": (True, sc.MS_NODIRATIME),
    "bind": (False, sc.MS_BIND), "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME), "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME), "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME), "nolazytime": (True, sc.MS_LAZYTIME),
    "silent": (False, sc.MS_SILENT), "loud": (True, sc.MS_SILENT),
    "iversion": (False, sc.MS_I_VERSION), "noiversion": (True, sc.MS_I_VERSION),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "symfollow": (True, sc.MS_NOSYMFOLLOW),
}
PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
_IGNORED = {"tmpcopyup", "defaults", "_netdev"}
# recursive attributes (runc 1.2's rro and friends): mount_setattr(AT_RECURSIVE) after the mount,
# so submounts of a bind get them too; option -> (clear?, MOUNT_ATTR_*)
RECURSIVE: dict[str, tuple[bool, int]] = {
    "rro": (False, sc.MOUNT_ATTR_RDONLY), "rrw": (True, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, sc.MOUNT_ATTR_NOSUID), "rsuid": (True, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (False, sc.MOUNT_ATTR_NODEV), "rdev": (True, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (False, sc.MOUNT_ATTR_NOEXEC), "rexec": (True, sc.MOUNT_ATTR_NOEXEC),
}
_IDMAP = ("idmap", "ridmap")  # idmap.prepare_mounts makes these before the init enters its userns
MOUNT_OPTIONS = sorted([*_FLAGS, *PROPAGATION, *_IGNORED, *RECURSIVE, *_IDMAP])


def parse_options(options: list[str]) -> tuple[int, list[int], str]:
    """-> (mount flags, propagation flags to apply afterwards, data string)."""
    flags = 0
    prop: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, f = _FLAGS[opt]
            flags = flags & ~f if clear else flags | f
        elif opt in PROPAGATION:
            prop.append(PROPAGATION[opt])
        elif opt in _IGNORED or opt in RECURSIVE or opt in _IDMAP:
            continue  # recursive attributes: recursive_attrs(), after the mount; idmap: idmap.py
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


def recursive_attrs(options: list[str]) -> tuple[int, int]:
    """(attributes to set, attributes to clear) that the r* options ask for, recursively."""
    attr_set = attr_clr = 0
    for opt in options:
        if opt in RECURSIVE:
            clear, a = RECURSIVE[opt]
            if clear:
                attr_clr, attr_set = attr_clr | a, attr_set & ~a
            else:
                attr_set, attr_clr = attr_set | a, attr_clr & ~a
    return attr_set, attr_clr


def secure_join(root: str, unsafe: str) -> str:
    """Resolve `unsafe` inside `root`, following symlinks as if root were '/'."""
    parts = [p for p in unsafe.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        p = parts.pop(0)
        if p == ".":
            continue
        if p == "..":
            if resolved:
                resolved.pop()
            continue
        full = fs.join(root, *resolved, p)
        try:
            st = posix.lstat(full)
        except FileNotFoundError:
            resolved.append(p)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise PyruncError(f"too many symlinks resolving {unsafe}")
            target = posix.readlink(full)
            if target.startswith("/"):
                resolved = []
            parts = [x for x in target.split("/") if x] + parts
            continue
        resolved.append(p)
    return fs.join(root, *resolved)


def validate(mounts: "list[Any]", linux: "dict[str, Any] | None" = None) -> None:
    """Structural checks done before anything is created."""
    from . import idmap
    for i, m in enumerate(mounts):
        if not isinstance(m, dict):
            raise PyruncError(f"invalid mount #{i}: not an object")
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest:
            raise PyruncError(f"invalid mount #{i}: destination is required")
        opts = m.get("options") or []
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            raise PyruncError(f"invalid mount {dest}: options must be a list of strings")
        typ = m.get("type") or ""
        if not isinstance(typ, str):
            raise PyruncError(f"invalid mount {dest}: type must be a string")
        parse_options(opts)
        is_bind = typ == "bind" or "bind" in opts or "rbind" in opts
        if not typ and not is_bind:
            raise PyruncError(f"invalid mount {dest}: no type and not a bind mount")
        if typ and not is_bind and typ not in ("cgroup", "cgroup2") and not _fs_known(typ):
            raise PyruncError(f"invalid mount {dest}: unknown filesystem type {typ!r}")
        if idmap.wants_idmap(m):
            err = idmap.check_mount(m, linux or {})
            if err:
                raise PyruncError(err)


_FILESYSTEMS: set[str] | None = None


def _fs_known(typ: str) -> bool:
    global _FILESYSTEMS
    if _FILESYSTEMS is None:
        try:
            with open("/proc/filesystems") as f:
                _FILESYSTEMS = {ln.split()[-1] for ln in f if ln.strip()}
        except OSError:
            return True
    base = typ.split(".")[0]  # fuse.sshfs
    return typ in _FILESYSTEMS or base in _FILESYSTEMS


def _mkdest(dest: str, source_is_dir: bool) -> None:
    if fs.lexists(dest):
        return
    if source_is_dir:
        fs.makedirs(dest, 0o755)
    else:
        fs.makedirs(fs.dirname(dest), 0o755)
        posix.close(posix.open(dest, posix.O_CREAT | posix.O_WRONLY | posix.O_CLOEXEC, 0o755))


def _locked_flags(path: str) -> int:
    """Flags an unprivileged (userns) bind remount must keep or the kernel refuses it."""
    st = posix.statvfs(path)
    out = 0
    for st_flag, ms in ((posix.ST_NOSUID, sc.MS_NOSUID), (posix.ST_NODEV, sc.MS_NODEV),
                        (posix.ST_NOEXEC, sc.MS_NOEXEC), (posix.ST_RDONLY, sc.MS_RDONLY)):
        if st.f_flag & st_flag:
            out |= ms
    return out


def bind_remount(dest: str, flags: int, userns: bool) -> None:
    extra = _locked_flags(dest) & ~sc.MS_RDONLY if userns else 0
    sc.mount(None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & ~(sc.MS_BIND | sc.MS_REC)) | extra,
             None)


def mount_one(rootfs: str, bundle: str, m: "dict[str, Any]", ctx: "dict[str, Any]", tree: int = -1) -> None:
    """One spec mount; `tree` is its idmapped copy (idmap.prepare_mounts) to attach, if any."""
    typ = m.get("type") or ""
    opts = m.get("options") or []
    flags, prop, data = parse_options(opts)
    dest = secure_join(rootfs, m["destination"])
    source = m.get("source") or typ or "none"
    userns = ctx.get("userns", False)
    if typ == "bind" or flags & sc.MS_BIND:
        if not source.startswith("/"):
            source = fs.join(bundle, source)
        try:
            st = posix.fstat(tree) if tree >= 0 else posix.stat(source)
        except OSError as e:
            raise PyruncError(f"bind mount source {source}: {e.strerror}") from None
        _mkdest(dest, stat.S_ISDIR(st.st_mode))
        if tree >= 0:
            sc.move_mount_fd(tree, dest)
            posix.close(tree)
        else:
            sc.mount(source, dest, None, sc.MS_BIND | (flags & sc.MS_REC), None)
        if flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT):
            bind_remount(dest, flags, userns)
    elif typ in ("cgroup", "cgroup2"):
        _mount_cgroup(dest, flags, ctx)
    else:
        if fs.islink(dest):
            raise PyruncError(f"mount destination {m['destination']} is a symlink")
        _mkdest(dest, True)
        if typ == "tmpfs" and m["destination"] == "/dev" and "mode=" not in data:
            data = ",".join(x for x in (data, "mode=755") if x)
        try:
            sc.mount(source, dest, typ, flags & ~sc.MS_REMOUNT, data)
        except OSError as e:
            # without a netns of their own, sysfs and mqueue cannot be mounted in a userns: bind
            if e.errno in (1, 13) and typ in ("sysfs", "mqueue") and userns:
                host = "/sys" if typ == "sysfs" else "/dev/mqueue"
                sc.mount(host, dest, None, sc.MS_BIND | sc.MS_REC, None)
                bind_remount(dest, flags, userns)
            else:
                raise PyruncError(f"mount {m['destination']} ({typ}): {e.strerror}") from None
    for p in prop:
        sc.mount(None, dest, None, p, None)
    attr_set, attr_clr = recursive_attrs(opts)
    if attr_set or attr_clr:
        try:
            sc.mount_setattr_recursive(dest, attr_set, attr_clr)
        except OSError as e:
            raise PyruncError(f"mount {m['destination']}: recursive options "
                              f"{', '.join(o for o in opts if o in RECURSIVE)}: {e.strerror}") from None


def _mount_cgroup(dest: str, flags: int, ctx: "dict[str, Any]") -> None:
    cg = ctx["cgroups"]
    base = flags & ~(sc.MS_RDONLY | sc.MS_REMOUNT)
    _mkdest(dest, True)
    if cg["mode"] == "v2":
        if ctx.get("cgroupns"):
            sc.mount("cgroup2", dest, "cgroup2", flags, None)
        else:
            sc.mount(cg["paths"][""], dest, None, sc.MS_BIND | sc.MS_REC, None)
            bind_remount(dest, flags | sc.MS_BIND, ctx.get("userns", False))
        return
    # v1: a tmpfs holding one bind mount per hierarchy, each showing the container's own cgroup
    sc.mount("tmpfs", dest, "tmpfs", base, "mode=755")
    for key, host in cg["paths"].items():
        name = key.replace("name=", "") if key != "unified" else "unified"
        sub = fs.join(dest, name)
        fs.makedirs(sub, 0o755)
        if not fs.isdir(host):
            continue
        sc.mount(host, sub, None, sc.MS_BIND, None)
        bind_remount(sub, flags | sc.MS_BIND, ctx.get("userns", False))
        if "," in name:  # cpu,cpuacct -> also cpu and cpuacct symlinks, as on the host
            for part in name.split(","):
                link = fs.join(dest, part)
                if not fs.lexists(link):
                    posix.symlink(name, link)
    if flags & sc.MS_RDONLY:
        sc.mount(None, dest, None, sc.MS_REMOUNT | base | sc.MS_RDONLY, None)


def make_parent_private(path: str, below: bool = False) -> None:
    """pivot_root refuses a shared parent mount; make the mount holding the rootfs private
    (`below`: the rootfs is a mount itself, so the one under it)."""
    best, shared = "", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left = line.split(" - ")[0].split()
            mnt = left[4]
            holds = (path == mnt and not below) or path.startswith(mnt.rstrip("/") + "/")
            if holds and len(mnt) >= len(best):
                best, shared = mnt, any(x.startswith("shared:") for x in left[6:])
    if best and shared:
        sc.mount(None, best, None, sc.MS_PRIVATE, None)


def prepare_root(rootfs: str, propagation: str | None, already_mounted: bool = False) -> None:
    """Propagation of / first, then make the rootfs a mount of its own (unless it is one)
    whose parent is private, as pivot_root wants."""
    flag = PROPAGATION.get(propagation or "", 0) or (sc.MS_SLAVE | sc.MS_REC)
    sc.mount(None, "/", None, flag, None)
    make_parent_private(rootfs, below=already_mounted)
    if not already_mounted:
        sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None)
        return
    # The rootfs is our working directory (init.stage1) and the namespace's copy of a host mount,
    # which pivot_root refuses (copied into a less privileged namespace, it is locked). Stack a
    # fresh copy on it and move into that: /proc/self/cwd then means the copy.
    tree = sc.open_tree_clone("", True)
    try:
        sc.move_mount_fd(tree, "")
        posix.fchdir(tree)
    finally:
        posix.close(tree)


def pivot(rootfs: str) -> None:
    old = posix.open("/", posix.O_DIRECTORY | posix.O_RDONLY | posix.O_CLOEXEC)
    new = posix.open(rootfs, posix.O_DIRECTORY | posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        posix.fchdir(new)
        sc.pivot_root(".", ".")
        # the old root is stacked under the new one; detach it without propagating to the host
        posix.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
        sc.umount2(".", sc.MNT_DETACH)
        posix.chdir("/")
    finally:
        posix.close(old)
        posix.close(new)


def move_root(rootfs: str) -> None:
    """--no-pivot: move the rootfs over / and chroot into it."""
    posix.chdir(rootfs)
    sc.mount(rootfs, "/", None, sc.MS_MOVE, None)
    posix.chroot(".")
    posix.chdir("/")


def mask_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            st = posix.stat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount("/dev/null", p, None, sc.MS_BIND, None)


def readonly_paths(paths: list[str], userns: bool) -> None:
    for p in paths:
        if not fs.exists(p):
            continue
        sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC, None)
        bind_remount(p, sc.MS_RDONLY | sc.MS_REC, userns)


def remount_root_readonly() -> None:
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _locked_flags("/"), None)
