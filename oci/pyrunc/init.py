"""The container side of `create`: enter namespaces, fork the init (pid 1 of a new pid
namespace), build the root filesystem, become the container user, then wait on the exec fifo
until `start`.

Both processes run under `child.run`: every failure before READY is an `ERR` line the parent
turns into create's error. READY is sent only when all that is left is what runc also leaves
until after `start` (startContainer hooks, a no_new_privs seccomp filter, execve), so a
container that cannot become its user, get its capabilities or find its executable never
looks created."""

import posix

from . import fs
from . import syscalls as sc
from .errors import PyruncError
from .sync import Channel

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

NS_FLAGS = {"pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET, "mount": sc.CLONE_NEWNS,
            "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "user": sc.CLONE_NEWUSER,
            "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME}
NS_PROC = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
           "cgroup": "cgroup", "time": "time"}
# join order: user first (it owns the others), mount last (it changes how paths resolve)
_ORDER = ["user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount"]


def enter_namespaces(namespaces: "list[dict[str, Any]]", chan: Channel | None) -> None:
    """setns the ones given by path, unshare the new ones (asking the parent for id maps)."""
    joined = {n["type"]: n["path"] for n in namespaces if n.get("path")}
    fds = {}
    for typ, path in joined.items():
        try:
            fds[typ] = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
        except OSError as e:
            raise PyruncError(f"open namespace {typ} path {path}: {e.strerror}") from None
    for typ in _ORDER:
        if typ in fds:
            try:
                sc.setns(fds[typ], NS_FLAGS[typ])
            except OSError as e:
                raise PyruncError(f"joining {typ} namespace {joined[typ]}: {e.strerror}") from None
            posix.close(fds[typ])
    new = [n["type"] for n in namespaces if not n.get("path")]
    if "user" in new:
        sc.unshare(sc.CLONE_NEWUSER)
        assert chan is not None
        chan.send("USERNS")
        chan.expect_ok()
    if "user" in new or "user" in joined:
        posix.setresgid(0, 0, 0)
        posix.setresuid(0, 0, 0)
    flags = 0
    for t in new:
        if t != "user":
            flags |= NS_FLAGS[t]
    if flags:
        sc.unshare(flags)
    if "network" in new:
        _loopback_up()


def _loopback_up() -> None:
    try:
        sc.loopback_up()  # podman's --network none relies on it, as on runc and crun
    except OSError as e:
        raise PyruncError(f"setting the loopback interface up: {e.strerror}") from None


def direct_flags(cfg: "dict[str, Any]", cg: "dict[str, Any]") -> int | None:
    """The clone flags with which `create` forks the init itself, straight into its cgroup2
    directory and its new namespaces (stage0), or None when it needs the set-up process
    (stage1): a user or time namespace (the set-up process enters the user namespace and has
    the parent write its id maps, or sets the time offsets its children see), a pid, mount or
    cgroup namespace joined by path (entered before the fork), idmapped mounts (made from the
    host's mount namespace), or no cgroup2 tree to be born in."""
    from . import cgroups, idmap
    if cgroups.v2_path(cg) is None:
        return None
    flags = 0
    for n in (cfg.get("linux") or {}).get("namespaces") or []:
        typ = n.get("type")
        if typ in ("user", "time") or (n.get("path") and typ in ("pid", "mount", "cgroup")):
            return None
        if not n.get("path") and typ != "cgroup":  # a new cgroup namespace: the init, in stage2
            flags |= NS_FLAGS[typ]
    if any(idmap.wants_idmap(m) for m in cfg.get("mounts") or []):
        return None
    return flags


def stage0(cfg: "dict[str, Any]", ctx: "dict[str, Any]", chan: Channel) -> None:
    """The init forked by `create` itself (direct_flags): born in its cgroup2 directory and its
    new namespaces, it joins the v1 hierarchies and the namespaces given by path, then builds
    the container (stage2). One fork fewer than stage1's set-up process, and no copy-on-write
    of a second interpreter's memory: about 2 ms of every create here."""
    from . import cgroups, devices, mounts, process  # noqa: F401 - imported while the parent works
    process.preload(None)
    chan.expect_ok()  # the cgroups exist and carry their limits, the fifo is there
    cgroups.join_self_v1(ctx["cgroups"])
    namespaces = (cfg.get("linux") or {}).get("namespaces") or []
    enter_namespaces([n for n in namespaces if n.get("path")], None)
    if any(n.get("type") == "network" and not n.get("path") for n in namespaces):
        _loopback_up()
    ctx["direct"] = True
    stage2(cfg, ctx, chan)


def stage1(cfg: "dict[str, Any]", ctx: "dict[str, Any]", chan: Channel) -> None:
    """Runs in the first child of `create` (under child.run); forks the init and returns."""
    from . import devices, idmap, mounts, process  # noqa: F401 - imported while the parent works
    from .child import run
    process.preload(None)
    chan.expect_ok()  # the cgroups exist and carry their limits (all but pids.max)
    from . import cgroups
    cgroups.join_self_v1(ctx["cgroups"])
    linux = cfg.get("linux") or {}
    if idmap.has_user_namespace(linux):
        # What the init needs from the host, taken while we are still the host's root: inside,
        # the namespace's root may not pass a 0700 directory of the host's root on the way.
        ctx["idmapped"] = idmap.prepare_mounts(cfg, ctx["bundle"], every_bind=True)
        ctx["fifo_fd"] = posix.open(ctx["fifo"], posix.O_PATH | posix.O_CLOEXEC)
        if ctx.get("console_socket") and (cfg.get("process") or {}).get("terminal"):
            from . import console
            ctx["console_fd"] = console.connect(ctx["console_socket"])
        if fs.ismount(ctx["rootfs"]):
            # the rootfs by our working directory, which unshare(CLONE_NEWNS) moves into the
            # new namespace's copy of its mount: /proc/self/cwd then reaches it without a walk
            posix.chdir(ctx["rootfs"])
            ctx["root_by_cwd"] = True
    elif any(idmap.wants_idmap(m) for m in cfg.get("mounts") or []):
        ctx["idmapped"] = idmap.prepare_mounts(cfg, ctx["bundle"])
    # a new cgroup namespace is rooted at its creator's cgroups: the init, once it is in all of
    # them, makes it (stage2)
    enter_namespaces([n for n in linux.get("namespaces") or [] if n.get("path") or n.get("type") != "cgroup"],
                     chan)
    offsets = linux.get("timeOffsets")
    if offsets and any(n["type"] == "time" and not n.get("path") for n in linux.get("namespaces") or []):
        with open("/proc/self/timens_offsets", "w") as f:
            for clock, off in offsets.items():
                f.write(f"{clock} {off.get('secs', 0)} {off.get('nanosecs', 0)}\n")
    pid, placed = _fork_init(ctx["cgroups"], idmap.has_user_namespace(linux) or any(
        n.get("type") == "cgroup" and n.get("path") for n in linux.get("namespaces") or []))
    if pid == 0:
        run(chan, lambda: stage2(cfg, ctx, chan), prefix="pyrunc init")
    chan.send(f"PID {pid} {'placed' if placed else 'moved-by-parent'}")


def _fork_init(cg: "dict[str, Any]", joined_elsewhere: bool) -> tuple[int, bool]:
    """Fork the init into the container's cgroup2 directory (if it has one) with clone3, so it
    is born there: (pid, True). Otherwise a plain fork, and the parent moves the init through
    cgroup.procs: (pid, False). That is the way when we have entered a user namespace (its root
    may not write to the host's cgroups) or joined a cgroup namespace (with nsdelegate, as systemd
    mounts cgroup2, the kernel refuses a cgroup outside it), and on kernels without
    CLONE_INTO_CGROUP (Linux < 5.7), which refuse it before making anything. A refusal after
    that is an error: the first fork in a new pid namespace that fails leaves the namespace
    unable to get a pid 1 at all, so no fallback could follow it.
    This process is single-threaded, as clone3 needs."""
    from . import cgroups
    v2 = cgroups.v2_path(cg)
    if v2 is None:
        return posix.fork(), True
    if joined_elsewhere:
        return posix.fork(), False
    pid = clone_init(v2)
    return (posix.fork(), False) if pid is None else (pid, True)


def clone_init(v2: str, flags: int = 0) -> int | None:
    """clone3 into the cgroup2 directory v2, in the new namespaces `flags` asks for: the pid (0
    in the child). None when the kernel refuses CLONE_INTO_CGROUP before making anything
    (syscalls.CLONE_INTO_CGROUP_UNSUPPORTED): the caller forks some other way. Any other
    refusal is an error naming the cgroup. The caller is single-threaded, as clone3 needs."""
    fd = posix.open(v2, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        return sc.clone_into_cgroup(fd, flags)
    except OSError as e:
        if e.errno not in sc.CLONE_INTO_CGROUP_UNSUPPORTED:
            raise PyruncError(f"forking the init into cgroup {v2}: {e.strerror}") from None
        return None
    finally:
        posix.close(fd)


def stage2(cfg: "dict[str, Any]", ctx: "dict[str, Any]", chan: Channel) -> None:
    from . import devices, mounts, process
    from .hooks import run as run_hooks
    linux = cfg.get("linux") or {}
    proc = cfg.get("process") or {}
    rootfs = ctx["rootfs"]
    types = {n["type"] for n in linux.get("namespaces") or []}
    userns = "user" in types
    ctx["userns"] = userns
    ctx["cgroupns"] = "cgroup" in types
    if ctx.get("new_cgroupns"):
        # rooted where we are once in all our cgroups (the parent may still have to move us into
        # the cgroup2 one), and made before /sys/fs/cgroup is mounted, so the mount shows it
        if not ctx.get("direct"):
            chan.expect_ok()
        sc.unshare(sc.CLONE_NEWCGROUP)
    mnts = cfg.get("mounts") or []
    if ctx.get("root_by_cwd"):
        mounts.prepare_root(rootfs, linux.get("rootfsPropagation"), already_mounted=True)
        rootfs = "/proc/self/cwd"
    else:
        mounts.prepare_root(rootfs, linux.get("rootfsPropagation"))
    trees = ctx.get("idmapped") or {}
    for i, m in enumerate(mnts):
        mounts.mount_one(rootfs, ctx["bundle"], m, ctx, trees.get(i, -1))
    if devices.needs_setup(mnts):
        devices.create_devices(rootfs, devices.all_devices(linux.get("devices") or []), userns)
        devices.create_symlinks(rootfs)
    sock = ctx.get("console_fd")
    if sock is None and ctx.get("console_socket") and proc.get("terminal"):
        from . import console
        sock = console.connect(ctx["console_socket"])
    fifo = ctx.get("fifo_fd")
    if fifo is None:
        fifo = posix.open(ctx["fifo"], posix.O_PATH | posix.O_CLOEXEC)
    cwd = mounts.secure_join(rootfs, proc.get("cwd") or "/")
    if not fs.exists(cwd):  # runc creates a missing cwd
        fs.makedirs(cwd, 0o755)
    hooks = cfg.get("hooks") or {}
    scmp = process.preload(linux.get("seccomp"))
    if hooks.get("startContainer"):
        import subprocess  # noqa: F401

        from . import jsonio  # noqa: F401
    if not ctx.get("new_cgroupns") and not ctx.get("direct"):
        chan.expect_ok()  # we are in all our cgroups, alone, under all their limits
    if any(hooks.get(k) for k in ("prestart", "createRuntime", "createContainer", "startContainer")):
        chan.send("HOOKS")  # the parent runs prestart/createRuntime and tells us our host pid
        ctx["host_pid"] = int(chan.expect_ok() or 0)
    if hooks.get("createContainer"):
        run_hooks("createContainer", hooks["createContainer"], _state(ctx, "created"))
    if ctx.get("no_pivot"):
        mounts.move_root(rootfs)
    else:
        mounts.pivot(rootfs)
    for key, value in (linux.get("sysctl") or {}).items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise PyruncError(f"sysctl {key}={value}: {e.strerror}") from None
    mounts.mask_paths(linux.get("maskedPaths") or [])
    mounts.readonly_paths(linux.get("readonlyPaths") or [], userns)
    if (cfg.get("root") or {}).get("readonly"):
        mounts.remount_root_readonly()
    if linux.get("rootfsPropagation"):
        sc.mount(None, "/", None, mounts.PROPAGATION[linux["rootfsPropagation"]], None)
    if cfg.get("hostname"):
        sc.sethostname(cfg["hostname"])
    if cfg.get("domainname"):
        sc.setdomainname(cfg["domainname"])
    args, env = process.prepare(proc)
    if sock is not None:
        from . import console
        console.setup_pty(sock, int((proc.get("user") or {}).get("uid", 0)), proc.get("consoleSize"))
    elif not proc.get("terminal"):
        posix.setsid() if ctx.get("setsid") else None
    process.become(proc, scmp)
    path = process.lookup(args[0], env)
    chan.send("READY")
    # wait until create has recorded us: if it dies first, nobody would ever start or delete us
    chan.expect_ok()
    chan.close()  # from here on a failure goes to stderr (child.run): nobody reads the channel
    # the create/start split: block here until `start` opens the other end of the fifo.
    # Reopening our own O_PATH descriptor works as the container user too.
    wfd = posix.open(f"/proc/self/fd/{fifo}", posix.O_WRONLY | posix.O_CLOEXEC)
    posix.write(wfd, b"0")
    posix.close(wfd)
    posix.close(fifo)
    if hooks.get("startContainer"):
        run_hooks("startContainer", hooks["startContainer"], _state(ctx, "running"))
    process.seal(proc, scmp)
    process.execve(path, args, env)


def _state(ctx: "dict[str, Any]", status: str) -> "dict[str, Any]":
    return {"ociVersion": "1.2.0", "id": ctx["id"], "status": status,
            "pid": ctx.get("host_pid") or posix.getpid(), "bundle": ctx["bundle"],
            "annotations": ctx.get("annotations") or {}}
