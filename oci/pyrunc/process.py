"""The last steps before execve, shared by the container init and `exec`, in this order:
`prepare` (rlimits, oom_score_adj, cwd, environment), `become` (umask, no_new_privs, seccomp,
user and groups, capabilities), `lookup` of the executable as that user, then, for the init,
report ready and wait for `start`, then `seal` (a no_new_privs seccomp filter) and `execve`.
Everything up to `lookup` can fail while the parent still listens, as runc arranges it."""

import posix
import stat

from . import fs
from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and collections, ~1 ms) cost at every short-lived command
    from collections.abc import Callable
    from typing import Any

RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
           "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
           "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
           "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}


def env_dict(env: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out


def lookup(arg0: str, env: dict[str, str]) -> str:
    """The executable, checked as the container user (call it after `become`), so that every
    reason execve would refuse it is a create-time error, worded as runc words it."""
    if "/" in arg0:
        try:
            st = posix.stat(arg0)
        except OSError as e:
            raise PyruncError(f'exec: "{arg0}": stat {arg0}: {(e.strerror or "").lower()}') from None
        if not stat.S_ISREG(st.st_mode) or not posix.access(arg0, posix.X_OK):
            raise PyruncError(f'exec: "{arg0}": permission denied')
        return arg0
    for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        p = fs.join(d or ".", arg0)
        if fs.isfile(p) and posix.access(p, posix.X_OK):
            return p
    raise PyruncError(f'exec: "{arg0}": executable file not found in $PATH')


def set_rlimits(rlimits: "list[dict[str, Any]] | None") -> None:
    if not rlimits:
        return
    from . import syscalls as sc
    for r in rlimits:
        num = RLIMITS.get(r.get("type", ""))
        if num is None:
            raise PyruncError(f"unknown rlimit type {r.get('type')!r}")
        try:
            sc.setrlimit(num, _rl(r.get("soft")), _rl(r.get("hard")))
        except OSError as e:
            raise PyruncError(f"setrlimit {r['type']} (soft {r.get('soft')}, hard {r.get('hard')}): "
                              f"{e.strerror}") from None


def _rl(v: int | None) -> int:
    from .syscalls import RLIM_INFINITY
    return RLIM_INFINITY if v is None or v < 0 or v >= RLIM_INFINITY else v


def prepare(proc: "dict[str, Any]") -> tuple[list[str], dict[str, str]]:
    """Steps that need the runtime's privileges: rlimits, oom_score_adj, cwd. Returns the
    process's argv and environment."""
    set_rlimits(proc.get("rlimits"))
    if proc.get("oomScoreAdj") is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(proc["oomScoreAdj"]))
        except OSError as e:  # lowering it needs CAP_SYS_RESOURCE, which a host may not grant
            raise PyruncError(f"write /proc/self/oom_score_adj ({proc['oomScoreAdj']}): "
                              f"{(e.strerror or '').lower()}") from None
    cwd = proc.get("cwd") or "/"
    try:
        posix.chdir(cwd)
    except OSError as e:
        raise PyruncError(f"chdir to cwd ({cwd!r}) set in config.json failed: {e.strerror}") from None
    args = proc.get("args") or []
    if not args:
        raise PyruncError("args must not be empty")
    env = env_dict(proc.get("env"))
    if "HOME" not in env:  # as runc: the user's home from the container's passwd, else /
        env["HOME"] = home_of(int((proc.get("user") or {}).get("uid", 0)))
    return args, env


def home_of(uid: int) -> str:
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def preload(seccomp: "dict[str, Any] | None") -> "Callable[[], None] | None":
    """Import and build everything `become` and `seal` need while the host root is still visible:
    after pivot_root (or setns into the mount namespace) no module can be imported."""
    from . import caps, syscalls
    syscalls.load()
    caps.last_cap()
    if seccomp:
        from . import seccomp as scmp
        return scmp.prepare(seccomp)
    return None


def become(proc: "dict[str, Any]", seccomp: "Callable[[], None] | None") -> None:
    """Drop privileges in runc's order: umask, no_new_privs, seccomp (when it still needs
    CAP_SYS_ADMIN to load), bounding set, groups and ids, capabilities. Runs before the process
    reports ready, so each refusal is a create-time error."""
    from . import caps as capmod
    from . import syscalls as sc
    user = proc.get("user") or {}
    if "umask" in user and user["umask"] is not None:
        posix.umask(user["umask"])
    else:
        posix.umask(0o022)
    nnp = bool(proc.get("noNewPrivileges"))
    if nnp:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if seccomp and not nnp:
        seccomp()
    caps = proc.get("capabilities")
    if caps is not None:
        capmod.drop_bounding(caps)
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    groups = [int(g) for g in user.get("additionalGids") or []]
    try:
        posix.setgroups(groups)
    except PermissionError as e:  # setgroups is denied in a user namespace without a gid map
        if groups:
            raise PyruncError(f"unable to setup user: setgroups {groups}: {e.strerror}") from None
    _set_id("gid", gid, posix.setresgid)
    _set_id("uid", uid, posix.setresuid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        capmod.apply(caps)


def _set_id(kind: str, value: int, setter: "Callable[[int, int, int], None]") -> None:
    try:
        setter(value, value, value)
    except OSError as e:
        import errno
        why = "unmapped in the user namespace" if e.errno == errno.EINVAL else (e.strerror or "").lower()
        raise PyruncError(f"unable to setup user: cannot set {kind} to {value}: {why}") from None


# --preserve-fds N of create, run or exec: descriptors 3 .. 3+N-1 pass to the process
PRESERVE_FDS = 0


def close_extra_fds() -> None:
    """Mark every descriptor above stdio and the --preserve-fds ones close-on-exec, as runc
    does: the process gets nothing else its caller (podman, conmon) or pyrunc had open."""
    from . import syscalls as sc
    first = 3 + PRESERVE_FDS
    try:
        sc.close_range(first, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
        return
    except OSError:  # before Linux 5.11, or a seccomp profile without close_range
        pass
    for name in posix.listdir("/proc/self/fd"):
        if int(name) >= first:
            try:
                posix.set_inheritable(int(name), False)
            except OSError:  # the descriptor listdir itself used, closed by now
                pass


def seal(proc: "dict[str, Any]", seccomp: "Callable[[], None] | None") -> None:
    """The last step before execve: no descriptor leaks into the process (close_extra_fds); with
    no_new_privs the seccomp filter needs no privilege, so it goes on as late as possible and the
    runtime's own syscalls need not be in the profile."""
    close_extra_fds()
    if seccomp and proc.get("noNewPrivileges"):
        seccomp()


def execve(path: str, args: list[str], env: dict[str, str]) -> None:
    try:
        posix.execve(path, args, env)
    except OSError as e:
        raise PyruncError(f"exec {path}: {(e.strerror or '').lower()}") from None
