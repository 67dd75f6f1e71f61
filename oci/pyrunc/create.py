"""`create`: check the bundle, reserve the state directory, fork the init (init.stage0) or, where
the container needs one, a set-up child that forks it (init.stage1), make the cgroups, and wait
until the init is ready and recorded."""

import posix
import time

from . import fs
from . import state as st_mod
from .child import run as run_child
from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

    from .sync import Channel

_SIGKILL = 9  # not `import signal`: its enum set-up costs start-up time
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


def load_config(bundle: str) -> "dict[str, Any]":
    from .jsonio import loads
    path = fs.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            cfg = loads(f.read())
    except FileNotFoundError:
        raise PyruncError(f"open {path}: no such file or directory") from None
    except ValueError as e:
        raise PyruncError(f"malformed config.json {path}: {e}") from None
    if not isinstance(cfg, dict):
        raise PyruncError(f"malformed config.json {path}: not a JSON object")
    return cfg


def validate(cfg: "dict[str, Any]", bundle: str) -> str:
    """Everything checkable before touching the system. Returns the absolute rootfs."""
    from . import mounts
    root = cfg.get("root")
    if not isinstance(root, dict) or not root.get("path"):
        raise PyruncError("root.path is required in config.json")
    rootfs = root["path"] if root["path"].startswith("/") else fs.join(bundle, root["path"])
    rootfs = fs.realpath(rootfs)
    if not fs.isdir(rootfs):
        raise PyruncError(f"rootfs ({rootfs}) does not exist")
    proc = cfg.get("process")
    if not isinstance(proc, dict) or not proc.get("args"):
        raise PyruncError("process.args must not be empty")
    linux = cfg.get("linux") or {}
    seen = set()
    for ns in linux.get("namespaces") or []:
        t = ns.get("type") if isinstance(ns, dict) else None
        if t not in NAMESPACE_TYPES:
            raise PyruncError(f"namespace type {t!r} is not supported")
        if t in seen:
            raise PyruncError(f"duplicate namespace type {t!r}")
        seen.add(t)
        if ns.get("path") and not fs.exists(ns["path"]):
            raise PyruncError(f"namespace {t} path {ns['path']} does not exist")
    if "mount" not in seen:
        raise PyruncError("a mount namespace is required (linux.namespaces has no 'mount')")
    if "user" in seen and not any(n.get("path") for n in linux["namespaces"] if n["type"] == "user"):
        if not linux.get("uidMappings") or not linux.get("gidMappings"):
            raise PyruncError("user namespace requires uidMappings and gidMappings")
    if cfg.get("hostname") and "uts" not in seen:
        raise PyruncError("unable to set hostname without a private UTS namespace")
    mounts.validate(cfg.get("mounts") or [], linux)
    prop = linux.get("rootfsPropagation")
    if prop and prop not in mounts.PROPAGATION:
        raise PyruncError(f"invalid rootfsPropagation {prop!r}")
    if linux.get("seccomp"):
        from . import seccomp
        seccomp.translate(linux["seccomp"])
    from . import process
    for r in proc.get("rlimits") or []:
        if r.get("type") not in process.RLIMITS:
            raise PyruncError(f"unknown rlimit type {r.get('type')!r}")
    check_process(proc, linux)
    return rootfs


def check_process(proc: "dict[str, Any]", linux: "dict[str, Any]") -> None:
    """What would make the child's privilege drop fail, said by name before anything exists.
    The child still reports these itself (a joined user namespace is not checked here)."""
    from . import idmap
    if idmap.creates_user_namespace(linux):
        err = idmap.unmapped_user(proc.get("user") or {}, linux.get("uidMappings") or [],
                                  linux.get("gidMappings") or [])
        if err:
            raise PyruncError(err)
    elif not idmap.has_user_namespace(linux):  # a user namespace grants every capability afresh
        from . import caps
        caps.check_available(proc.get("capabilities"))


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _write_maps(pid: int, linux: "dict[str, Any]") -> None:
    for kind, key in (("uid", "uidMappings"), ("gid", "gidMappings")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or [])
        if lines:
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(lines)


def create(root: str, cid: str, bundle: str, pid_file: str | None, console_socket: str | None,
           no_pivot: bool) -> "dict[str, Any]":
    from . import cgroups
    from .sync import pair
    bundle = fs.realpath(bundle or ".")
    cfg = load_config(bundle)
    rootfs = validate(cfg, bundle)
    proc = cfg["process"]
    if proc.get("terminal") and not console_socket:
        raise PyruncError("cannot allocate tty if runc will detach without setting console socket")
    if console_socket and not proc.get("terminal"):
        raise PyruncError("cannot use console socket if runc will not detach or allocate tty")
    linux = cfg.get("linux") or {}
    d = st_mod.reserve(root, cid)
    cg = None
    made: list[str] = []
    init_pid = 0
    child = 0
    parent: Channel | None = None
    pid_file_written = False
    try:
        cg = cgroups.resolve(linux.get("cgroupsPath") or "", cid)
        fifo = fs.join(d, st_mod.FIFO)
        # No process of ours is migrated with a write to cgroup.procs: that takes a global lock
        # that waits for an RCU grace period, 8-20 ms on every create here. The init is forked
        # straight into the cgroup2 directory (init.clone_init) and moves itself into the v1
        # hierarchies (cgroups.join_self_v1), or a set-up process does both before forking it.
        ctx = {"id": cid, "bundle": bundle, "rootfs": rootfs, "cgroups": cg, "fifo": fifo,
               "console_socket": console_socket and fs.abspath(console_socket), "no_pivot": no_pivot,
               "annotations": cfg.get("annotations") or {},
               "new_cgroupns": any(n.get("type") == "cgroup" and not n.get("path")
                                   for n in linux.get("namespaces") or [])}
        parent, kid = pair()
        # fork first: the init (or the set-up child) imports its modules on the other core while
        # we set up cgroups
        init_pid = _fork_init_directly(parent, kid, cfg, ctx, made)
        if not init_pid:
            child = posix.fork()
            if child == 0:
                run_child(kid, lambda: _stage1(parent, cfg, ctx, kid))
        kid.close()
        parent.watch(init_pid or child)
        born_in = cgroups.v2_path(cg) if init_pid else None  # made already
        made += cgroups.create({"mode": cg["mode"],
                                "paths": {k: p for k, p in cg["paths"].items() if p != born_in}})
        from .devices import cgroup_rules
        res = dict(linux.get("resources") or {})
        res["devices"] = cgroup_rules(res.get("devices") or [], linux.get("devices") or [])
        # with a set-up child, pids.max waits until it has gone: until then a v1 pids cgroup
        # holds it beside the init, and a limit of 1 would refuse the init's fork
        pids = res.pop("pids", None) if child else None
        cgroups.apply(cg, res)
        # made while the child loads its modules: it opens the fifo only once told OK
        posix.mkfifo(fifo, 0o622)
        posix.chmod(fifo, 0o622)  # umask would drop the write bit a user-namespaced init needs
        parent.tell("OK")  # the child may join them now
        hooks = cfg.get("hooks") or {}
        rec: dict[str, Any] = {}

        def record() -> None:
            """Written while the init builds its root filesystem (the state directory goes, with
            it, if the init never gets ready)."""
            nonlocal rec, pid_file_written
            rec = {"id": cid, "pid": init_pid, "pid_start": st_mod.proc_start_time(init_pid),
                   "bundle": bundle, "rootfs": rootfs, "created": _now(),
                   "annotations": cfg.get("annotations") or {}, "cgroups": cg, "config": cfg}
            st_mod.save(root, rec)
            if pid_file:  # for our caller, who reads it only once we have succeeded
                st_mod.write_pid_file(pid_file, init_pid)
                pid_file_written = True

        if init_pid:
            record()
        while True:
            msg = parent.recv()
            if msg is None:
                raise PyruncError(_died(child, init_pid, cfg))
            if msg == "USERNS":
                _write_maps(child, linux)
                parent.tell("OK")
            elif msg.startswith("PID "):
                pid_text, _, placed = msg[4:].partition(" ")
                init_pid = int(pid_text)
                parent.watch(init_pid)  # from now on the init is the one that must answer
                posix.waitpid(child, 0)
                child = 0
                v2 = cgroups.v2_path(cg)
                if v2 and placed != "placed":  # a kernel without CLONE_INTO_CGROUP: move it
                    cgroups.join({"paths": {"": v2}}, init_pid)
                if pids:
                    cgroups.apply(cg, {"pids": pids})
                parent.tell("OK")
                record()
            elif msg == "HOOKS":
                from .hooks import run as run_hooks
                s = _hook_state(cid, init_pid, bundle, cfg, "created")
                run_hooks("prestart", hooks.get("prestart") or [], s)
                run_hooks("createRuntime", hooks.get("createRuntime") or [], s)
                parent.tell(f"OK {init_pid}")
            elif msg.startswith("ERR "):
                raise PyruncError(msg[4:])
            elif msg == "READY":
                break
        parent.tell("OK")  # recorded: the init may wait for `start` now
        parent.close()
        return rec
    except BaseException as e:
        # the child's own error explains ours: a step of the parent (moving the init into its
        # cgroups, writing its id maps) fails with ESRCH when the init has just died of that error
        child_err = parent.pending_error() if parent is not None and isinstance(e, Exception) else None
        if parent is not None:
            parent.close()
        for pid in (child, init_pid):
            if pid:
                try:
                    posix.kill(pid, _SIGKILL)
                except ProcessLookupError:
                    pass
        if child:
            try:
                posix.waitpid(child, 0)
            except ChildProcessError:  # _died reaped it to say how it ended
                pass
        from .container import _rmtree, _wait_gone
        if init_pid:
            _wait_gone(init_pid, None, 5.0)
        if cg is not None:
            for pid in cgroups.procs(cg):
                try:
                    posix.kill(pid, _SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                cgroups.remove(cg, made)
            except PyruncError:
                pass
        _rmtree(d)
        if pid_file_written:
            try:
                posix.unlink(pid_file)
            except FileNotFoundError:
                pass
        if child_err is not None:
            raise PyruncError(child_err) from None
        raise


def _fork_init_directly(parent: "Channel", kid: "Channel", cfg: "dict[str, Any]", ctx: "dict[str, Any]",
                        made: list[str]) -> int:
    """Fork the init with clone3, born in its cgroup2 directory (made first, and added to
    `made`) and its new namespaces, when nothing needs the set-up process between
    (init.direct_flags): its pid. 0 when the set-up process is needed, or the kernel has no
    clone3 with CLONE_INTO_CGROUP (it refuses before making anything)."""
    from . import cgroups, init
    cg = ctx["cgroups"]
    flags = init.direct_flags(cfg, cg)
    if flags is None:
        return 0
    v2 = cgroups.v2_path(cg)
    assert v2 is not None
    made += cgroups.create({"mode": cg["mode"], "paths": {k: p for k, p in cg["paths"].items() if p == v2}})
    pid = init.clone_init(v2, flags)
    if pid is None:
        return 0
    if pid == 0:
        parent.close()
        run_child(kid, lambda: init.stage0(cfg, ctx, kid), prefix="pyrunc init")
    return pid


def _stage1(parent: "Channel", cfg: "dict[str, Any]", ctx: "dict[str, Any]", kid: "Channel") -> None:
    parent.close()
    from . import init
    init.stage1(cfg, ctx, kid)


def _died(child: int, init_pid: int, cfg: "dict[str, Any]") -> str:
    """Why the channel ended without READY when no ERR line came: say who died and how."""
    if init_pid:
        msg = f"container init (pid {init_pid}) exited before it was ready"
        if (cfg.get("linux") or {}).get("seccomp") and not (cfg.get("process") or {}).get("noNewPrivileges"):
            # without no_new_privs the filter goes on before the ready report, as in runc, and a
            # profile that denies write(2) silences the init's own error
            msg += " (its seccomp profile, loaded before it reports, may deny the calls it needs)"
        return msg
    try:
        _, status = posix.waitpid(child, 0)
    except ChildProcessError:
        return "container set-up process exited before it was ready"
    if posix.WIFSIGNALED(status):
        return f"container set-up process was killed by signal {posix.WTERMSIG(status)} before it was ready"
    code = posix.waitstatus_to_exitcode(status)
    return f"container set-up process exited with status {code} before it was ready"


def _hook_state(cid: str, pid: int, bundle: str, cfg: "dict[str, Any]", status: str) -> "dict[str, Any]":
    return {"ociVersion": st_mod.OCI_VERSION, "id": cid, "status": status, "pid": pid, "bundle": bundle,
            "annotations": cfg.get("annotations") or {}}
