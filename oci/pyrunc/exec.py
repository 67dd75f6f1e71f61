"""`pyrunc exec`: a new process inside a running container's namespaces and cgroups."""

import _signal as signal  # not `signal`: its IntEnum set-up imports enum, milliseconds per exec
import posix

from . import fs
from . import state as st_mod
from .child import run as run_child
from .errors import PyruncError
from .init import NS_FLAGS, NS_PROC

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

    from .sync import Channel


def build_process(rec: "dict[str, Any]", process_file: str | None, args: list[str], opts: "dict[str, Any]"
                  ) -> "dict[str, Any]":
    if process_file:
        from .jsonio import loads
        try:
            with open(process_file, "rb") as f:
                return loads(f.read())
        except (OSError, ValueError) as e:
            raise PyruncError(f"process file {process_file}: {e}") from None
    base = dict((rec.get("config") or {}).get("process") or {})
    if not args:
        raise PyruncError("exec: args must not be empty")
    base["args"] = args
    base["terminal"] = bool(opts.get("tty"))
    env = list(base.get("env") or [])
    env += opts.get("env") or []
    base["env"] = env
    if opts.get("cwd"):
        base["cwd"] = opts["cwd"]
    if opts.get("user"):
        uid, _, gid = opts["user"].partition(":")
        user = dict(base.get("user") or {})
        user["uid"] = int(uid)
        user["gid"] = int(gid) if gid else 0
        base["user"] = user
    if opts.get("additional_gids"):
        user = dict(base.get("user") or {})
        user["additionalGids"] = [int(g) for g in opts["additional_gids"]]
        base["user"] = user
    if opts.get("no_new_privs"):
        base["noNewPrivileges"] = True
    return base


def _enter(pid: int, namespaces: "list[dict[str, Any]]") -> None:
    from . import syscalls as sc
    fds = []
    for typ in ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount"):
        if not any(n.get("type") == typ for n in namespaces):
            continue
        path = f"/proc/{pid}/ns/{NS_PROC[typ]}"
        try:
            if posix.stat(path).st_ino == posix.stat(f"/proc/self/ns/{NS_PROC[typ]}").st_ino:
                continue
            fds.append((typ, posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)))
        except OSError as e:
            raise PyruncError(f"open {path}: {e.strerror}") from None
    for typ, fd in fds:
        sc.setns(fd, NS_FLAGS[typ])
        posix.close(fd)
    if any(t == "user" for t, _ in fds):
        posix.setresgid(0, 0, 0)
        posix.setresuid(0, 0, 0)


def run(root: str, cid: str, proc: "dict[str, Any]", pid_file: str | None, detach: bool,
        console_socket: str | None) -> int:
    from .create import check_process
    from .sync import pair
    rec = st_mod.load(root, cid)
    status = st_mod.status(root, rec)
    if status == "stopped":
        raise PyruncError("cannot exec in a stopped container")
    if status == "paused":
        raise PyruncError("cannot exec in a paused container")
    cfg = rec.get("config") or {}
    check_process(proc, cfg.get("linux") or {})
    proxy = None
    if proc.get("terminal") and not console_socket:
        if detach:
            raise PyruncError("cannot allocate tty if runc will detach without setting console socket")
        from . import console
        proxy, console_socket = console.listen(fs.join(root, cid, f"console-{posix.getpid()}.sock"))
    if _joins_by_procs(cfg.get("linux") or {}):
        from . import cgroups
        cgroups.prewarm()
    from . import syscalls as sc
    if not detach:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # the exec'd process is re-parented to us: we wait
    parent, kid = pair()
    child = posix.fork()
    if child == 0:
        run_child(kid, lambda: _setup(parent, rec, proc, console_socket, kid))
    kid.close()
    parent.watch(child)
    pid = 0
    err = None
    while True:
        msg = parent.recv()
        if msg is None:
            break  # the process exec'd (our pipe is close-on-exec) or died
        if msg.startswith("PID "):
            pid = int(msg[4:])
            parent.watch(pid)  # a copy of the pipe leaked anywhere must not keep us here
        elif msg.startswith("ERR "):
            err = msg[4:]
    posix.waitpid(child, 0)
    parent.close()
    if err or not pid:
        if proxy is not None:
            proxy.close()
            if console_socket and fs.exists(console_socket):
                posix.unlink(console_socket)
    if err:
        if pid:
            _reap(pid)
        raise PyruncError(err)
    if not pid:
        raise PyruncError("exec: the setup process died")
    if pid_file:
        st_mod.write_pid_file(pid_file, pid)
    if detach:
        return 0
    if proxy is not None:
        from . import console
        return console.proxy_until_exit(proxy, pid, _wait_forwarding)
    return _wait_forwarding(pid)


def _setup(parent: "Channel", rec: "dict[str, Any]", proc: "dict[str, Any]", console_socket: str | None,
           kid: "Channel") -> None:
    """The first child (under child.run): join the container's cgroups and namespaces, then
    fork the process itself, which does the rest under child.run as well.

    As in create, no migration through cgroup.procs where it can be helped (each waits for an
    RCU grace period, holding cgroup_mutex): this process moves itself into the v1 hierarchies
    through `tasks`, and the process is forked into the cgroup2 directory with clone3. In a
    container with a user or cgroup namespace clone3 would be refused from inside them (the
    namespace's root may not write to the host's cgroups; nsdelegate hides cgroups outside the
    namespace), so this process joins through cgroup.procs before entering them, as before."""
    from . import cgroups
    parent.close()
    linux = (rec.get("config") or {}).get("linux") or {}
    cg = rec.get("cgroups") or {}
    v2 = None
    v2_fd = -1
    if _joins_by_procs(linux):
        cgroups.join(cg, posix.getpid())
    else:
        cgroups.join_self_v1(cg)
        v2 = cgroups.v2_path(cg)
        if v2:  # opened here: after entering the mount namespace the path would be the container's
            v2_fd = posix.open(v2, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    sock = None
    if console_socket:
        from . import console
        sock = console.connect(console_socket)
    from . import process
    scmp = process.preload(linux.get("seccomp"))
    _enter(rec["pid"], linux.get("namespaces") or [])
    pid = _fork_into(v2, v2_fd) if v2 else posix.fork()
    if pid == 0:
        run_child(kid, lambda: _child(proc, scmp, sock))
    kid.send(f"PID {pid}")


def _joins_by_procs(linux: "dict[str, Any]") -> bool:
    return any(n.get("type") in ("user", "cgroup") for n in linux.get("namespaces") or [])


def _fork_into(v2: str, v2_fd: int) -> int:
    """Fork with clone3 into the cgroup2 directory open at v2_fd; on a kernel without
    CLONE_INTO_CGROUP (refused before anything is made), join it through cgroup.procs (relative
    to the directory's descriptor: our mount namespace is the container's now) and fork."""
    from . import syscalls as sc
    try:
        try:
            return sc.clone_into_cgroup(v2_fd)
        except OSError as e:
            if e.errno not in sc.CLONE_INTO_CGROUP_UNSUPPORTED:
                raise PyruncError(f"exec: forking into cgroup {v2}: {e.strerror}") from None
        try:
            fd = posix.open("cgroup.procs", posix.O_WRONLY | posix.O_CLOEXEC, dir_fd=v2_fd)
            try:
                posix.write(fd, str(posix.getpid()).encode())
            finally:
                posix.close(fd)
        except OSError as e:
            raise PyruncError(f"exec: joining cgroup {v2}: {e.strerror}") from None
        return posix.fork()
    finally:
        posix.close(v2_fd)


def _reap(pid: int) -> None:
    try:
        posix.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait_forwarding(pid: int) -> int:
    def forward(signum: int, _frame: "Any") -> None:
        try:
            posix.kill(pid, signum)
        except ProcessLookupError:
            pass
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGWINCH):
        signal.signal(s, forward)
    while True:
        try:
            _, status = posix.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return posix.waitstatus_to_exitcode(status) if posix.WIFEXITED(status) else 128 + posix.WTERMSIG(status)


def _child(proc: "dict[str, Any]", seccomp: "Any", sock: int | None) -> None:
    from . import process
    args, env = process.prepare(proc)
    if sock is not None:
        from . import console
        console.setup_pty(sock, int((proc.get("user") or {}).get("uid", 0)), proc.get("consoleSize"))
    process.become(proc, seccomp)
    path = process.lookup(args[0], env)
    process.seal(proc, seccomp)
    process.execve(path, args, env)
