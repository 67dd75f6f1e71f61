"""The last steps before execve, shared by the container init and `exec`: rlimits, cwd, umask,
no_new_privs, seccomp, user and groups, capabilities, executable lookup."""

from __future__ import annotations

import os
from collections.abc import Callable

from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
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
    if "/" in arg0:
        if not os.access(arg0, os.X_OK):
            raise PyruncError(f'exec: "{arg0}": stat {arg0}: no such file or directory'
                              if not os.path.exists(arg0) else f'exec: "{arg0}": permission denied')
        return arg0
    for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        p = os.path.join(d or ".", arg0)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise PyruncError(f'exec: "{arg0}": executable file not found in $PATH')


def set_rlimits(rlimits: list[dict[str, Any]] | None) -> None:
    if not rlimits:
        return
    import resource
    for r in rlimits:
        num = RLIMITS.get(r.get("type", ""))
        if num is None:
            raise PyruncError(f"unknown rlimit type {r.get('type')!r}")
        try:
            resource.setrlimit(num, (_rl(r.get("soft")), _rl(r.get("hard"))))
        except (OSError, ValueError) as e:
            raise PyruncError(f"setrlimit {r['type']}: {e}") from None


def _rl(v: int | None) -> int:
    import resource
    return resource.RLIM_INFINITY if v is None or v < 0 or v >= 2**64 - 1 else v


def prepare(proc: dict[str, Any]) -> tuple[str, list[str], dict[str, str]]:
    """Privileged steps that must happen before waiting for start; returns the exec triple."""
    set_rlimits(proc.get("rlimits"))
    if proc.get("oomScoreAdj") is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(proc["oomScoreAdj"]))
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise PyruncError(f"chdir to cwd ({cwd!r}) set in config.json failed: {e.strerror}") from None
    args = proc.get("args") or []
    if not args:
        raise PyruncError("args must not be empty")
    env = env_dict(proc.get("env"))
    if "HOME" not in env:  # as runc: the user's home from the container's passwd, else /
        env["HOME"] = home_of(int((proc.get("user") or {}).get("uid", 0)))
    return lookup(args[0], env), args, env


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


def preload(seccomp: dict[str, Any] | None) -> Callable[[], None] | None:
    """Import and build everything `finish` needs while the host root is still visible:
    after pivot_root (or setns into the mount namespace) no module can be imported."""
    import resource  # noqa: F401

    from . import caps, syscalls  # noqa: F401
    caps.last_cap()
    if seccomp:
        from . import seccomp as scmp
        return scmp.prepare(seccomp)
    return None


def finish(proc: dict[str, Any], seccomp: Callable[[], None] | None) -> None:
    """Drop privileges in runc's order. Nothing may fail silently after this but execve."""
    from . import caps as capmod
    from . import syscalls as sc
    user = proc.get("user") or {}
    if "umask" in user and user["umask"] is not None:
        os.umask(user["umask"])
    else:
        os.umask(0o022)
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
    try:
        os.setgroups([int(g) for g in user.get("additionalGids") or []])
    except PermissionError:
        if user.get("additionalGids"):
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        capmod.apply(caps)
    if seccomp and nnp:
        seccomp()
