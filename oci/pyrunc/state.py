"""Container state under --root/<id>: state.json written atomically, status derived from the
live process (pid plus its start time, so a recycled pid is not mistaken for the container)."""

import posix

from . import fs
from .errors import ALREADY_EXISTS, NOT_EXIST, PyruncError
from .jsonio import dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

OCI_VERSION = "1.2.0"
FIFO = "exec.fifo"


def container_dir(root: str, cid: str) -> str:
    if not cid or "/" in cid or cid in (".", "..") or "\0" in cid:
        raise PyruncError(f"invalid container id {cid!r}")
    return fs.join(root, cid)


def save(root: str, st: "dict[str, Any]") -> None:
    """Write st atomically but not durably: it describes live processes, which a host crash
    ends anyway (runc's root is a tmpfs, and runc does not fsync it either). The rename still
    keeps readers from ever seeing a torn file; the four fsyncs cost ~4 ms per create on disk."""
    # the one writer both layers share (imported here: the commands that only read state need
    # no writer)
    from ..atomic_file import write_atomic
    write_atomic(fs.join(container_dir(root, st["id"]), "state.json"),
                 dumps(st, separators=(",", ":")).encode(), 0o600, durable=False)


def write_pid_file(path: str, pid: int) -> None:
    """--pid-file: atomic for its reader (conmon, the caller), not durable, as runc's."""
    from ..atomic_file import write_atomic
    write_atomic(fs.abspath(path), str(pid).encode(), 0o644, durable=False)


def load(root: str, cid: str) -> "dict[str, Any]":
    path = fs.join(container_dir(root, cid), "state.json")
    try:
        with open(path, "rb") as f:
            return loads(f.read())
    except FileNotFoundError:
        raise PyruncError(NOT_EXIST) from None
    except ValueError as e:
        raise PyruncError(f"corrupt state for {cid}: {e}") from None


def reserve(root: str, cid: str) -> str:
    fs.makedirs(root, 0o711)
    d = container_dir(root, cid)
    try:
        posix.mkdir(d, 0o711)
    except FileExistsError:
        raise PyruncError(ALREADY_EXISTS) from None
    return d


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def alive(st: "dict[str, Any]") -> bool:
    pid = st.get("pid") or 0
    return pid > 0 and proc_start_time(pid) == st.get("pid_start")


def status(root: str, st: "dict[str, Any]") -> str:
    if not alive(st):
        return "stopped"
    if fs.exists(fs.join(container_dir(root, st["id"]), FIFO)):
        return "created"
    from . import cgroups
    if cgroups.is_frozen(st.get("cgroups") or {}):
        return "paused"
    return "running"


def oci_state(root: str, st: "dict[str, Any]", override: str | None = None) -> "dict[str, Any]":
    stat = override or status(root, st)
    return {
        "ociVersion": OCI_VERSION, "id": st["id"], "pid": st["pid"] if stat != "stopped" else 0,
        "status": stat, "bundle": st["bundle"], "rootfs": st.get("rootfs", ""),
        "created": st.get("created", ""), "owner": "", "annotations": st.get("annotations") or {},
    }
