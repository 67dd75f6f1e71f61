"""The verbs after create: start, kill, delete, pause/resume, update, list. Each loads the state,
checks the status with runc's wording for the errors, and does its work.

conmon and cri-shim run these several times per container; like all of pyrunc they run on
`posix`, with `fs` for paths, and never import `os` (fs.py says why)."""

import posix
import time

from . import fs
from . import state as st_mod
from .errors import NOT_EXIST, PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

_SIGKILL = 9  # not `import signal`: its enum set-up costs start-up time


def _rmtree(d: str) -> None:
    """The state dir is flat (state.json, the fifo); no need for shutil's imports."""
    try:
        for name in posix.listdir(d):
            try:
                posix.unlink(fs.join(d, name))
            except IsADirectoryError:
                _rmtree(fs.join(d, name))
        posix.rmdir(d)
    except FileNotFoundError:
        pass


def _wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while time.monotonic() < deadline:
        cur = st_mod.proc_start_time(pid)
        if cur is None or (start is not None and cur != start):
            return True
        try:  # our own child (run): reap it, or it stays a zombie forever
            if posix.waitpid(pid, posix.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return False


def start(root: str, cid: str) -> None:
    rec = st_mod.load(root, cid)
    status = st_mod.status(root, rec)
    if status == "stopped":
        raise PyruncError("cannot start a container that has stopped")
    if status != "created":
        raise PyruncError("cannot start an already running container")
    fifo = fs.join(root, cid, st_mod.FIFO)
    import select
    fd = posix.open(fifo, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                if posix.read(fd, 1):
                    break
            if not st_mod.alive(rec):
                raise PyruncError("cannot start a container that has stopped")
    finally:
        posix.close(fd)
    posix.unlink(fifo)
    hooks = (rec.get("config") or {}).get("hooks") or {}
    if hooks.get("poststart"):
        from .hooks import run as run_hooks
        run_hooks("poststart", hooks["poststart"], st_mod.oci_state(root, rec, "running"))


def kill(root: str, cid: str, sig: int, all_procs: bool) -> None:
    rec = st_mod.load(root, cid)
    if st_mod.status(root, rec) == "stopped":
        raise PyruncError("container not running")
    if all_procs:
        from . import cgroups
        pids = cgroups.procs(rec.get("cgroups") or {}) or [rec["pid"]]
        for pid in pids:
            try:
                posix.kill(pid, sig)
            except ProcessLookupError:
                pass
        return
    try:
        posix.kill(rec["pid"], sig)
    except ProcessLookupError:
        raise PyruncError("container not running") from None


def delete(root: str, cid: str, force: bool) -> None:
    from . import cgroups
    try:
        rec = st_mod.load(root, cid)
    except PyruncError as e:
        if force and str(e) == NOT_EXIST:
            # a create killed half-way leaves its reserved directory without state: clear it
            d = st_mod.container_dir(root, cid)
            if fs.isdir(d):
                _rmtree(d)
            return
        raise
    status = st_mod.status(root, rec)
    if status in ("running", "paused") and not force:
        raise PyruncError(f"cannot delete container {cid} that is not stopped: {status}")
    cg = rec.get("cgroups") or {}
    if status != "stopped":
        try:
            posix.kill(rec["pid"], _SIGKILL)
        except ProcessLookupError:
            pass
        for pid in cgroups.procs(cg):
            try:
                posix.kill(pid, _SIGKILL)
            except ProcessLookupError:
                pass
        if status == "paused":
            cgroups.freeze(cg, False)
        if not _wait_gone(rec["pid"], rec.get("pid_start"), 10.0):
            raise PyruncError(f"container {cid} init {rec['pid']} did not die")
    else:
        for pid in cgroups.procs(cg):  # stragglers without a pid namespace to take them down
            try:
                posix.kill(pid, _SIGKILL)
            except ProcessLookupError:
                pass
    cgroups.remove(cg)
    hooks = (rec.get("config") or {}).get("hooks") or {}
    if hooks.get("poststop"):
        from . import log
        from .hooks import run as run_hooks
        try:
            run_hooks("poststop", hooks["poststop"], st_mod.oci_state(root, rec, "stopped"))
        except PyruncError as e:
            log.warning(str(e))
    _rmtree(fs.join(root, cid))


def pause(root: str, cid: str, frozen: bool) -> None:
    from . import cgroups
    rec = st_mod.load(root, cid)
    status = st_mod.status(root, rec)
    if frozen and status not in ("running", "created"):
        raise PyruncError("container not running")
    if not frozen and status != "paused":
        raise PyruncError("container not paused")
    cgroups.freeze(rec.get("cgroups") or {}, frozen)


def update(root: str, cid: str, resources: "dict[str, Any]") -> None:
    from . import cgroups
    rec = st_mod.load(root, cid)
    if st_mod.status(root, rec) == "stopped":
        raise PyruncError("container not running")
    cgroups.apply(rec.get("cgroups") or {}, resources)
    linux = rec.setdefault("config", {}).setdefault("linux", {})
    merged = linux.setdefault("resources", {})
    for k, v in resources.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k].update(v)
        else:
            merged[k] = v
    st_mod.save(root, rec)


def list_states(root: str) -> "list[dict[str, Any]]":
    out = []
    try:
        names = sorted(posix.listdir(root))
    except FileNotFoundError:
        return []
    for name in names:
        try:
            rec = st_mod.load(root, name)
        except PyruncError:
            continue
        out.append(st_mod.oci_state(root, rec))
    return out
