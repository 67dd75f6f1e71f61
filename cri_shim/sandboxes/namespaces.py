"""Pinning a pod's namespaces to files.

net, ipc and uts namespaces are created by util-linux `unshare` with --net=FILE
style arguments, which bind-mount each new namespace onto FILE: the namespace then
lives as long as the mount, with no process holding it, and survives a restart of
cri-shim. A shared PID namespace needs a process: the pod's infra process (infra.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from cri_shim import mounts
from cri_shim.errors import Internal

NS_KINDS = ("net", "ipc", "uts")


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise Internal(f"{' '.join(argv)}: {(err or out).decode(errors='replace').strip()}")


async def pin_namespaces(pins: dict[str, Path], hostname: str) -> None:
    """Create new namespaces for each kind in `pins` (net/ipc/uts) bound to those files.

    The hostname is set inside the new UTS namespace, and loopback brought up in the
    new network namespace (the CNI loopback plugin may do it again; harmless).
    """
    if not pins:
        return
    for path in pins.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    args = ["unshare"] + [f"--{kind}={path}" for kind, path in pins.items()]
    script = []
    if "uts" in pins and hostname:
        script.append('hostname "$1"')
    if "net" in pins:
        script.append("ip link set lo up")
    await _run(*args, "--", "/bin/sh", "-ec", "; ".join(script) or "true", "pin", hostname)


def unpin(path: Path) -> None:
    """Unmount a pin (detached, so a namespace still in use stays alive for its users)."""
    mounts.unmount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def sysctls_in(pins: dict[str, Path], values: dict[str, str]) -> None:
    """Write sysctls from inside the pod's namespaces (net.* and IPC sysctls are per namespace)."""
    if not values:
        return
    enter = ["nsenter"] + [f"--{kind}={p}" for kind, p in pins.items()]
    writes = []
    args = []
    for i, (key, value) in enumerate(values.items()):
        if "/" in key or ".." in key or not key:
            raise Internal(f"invalid sysctl name {key!r}")
        path = "/proc/sys/" + key.replace(".", "/")
        writes.append(f'printf %s "${2 * i + 2}" > "${2 * i + 1}"')
        args += [path, value]
    await _run(*enter, "--", "/bin/sh", "-ec", "; ".join(writes), "sysctl", *args)


def stop_pid_holder(pidfile: Path) -> None:
    """Stop the PID-namespace holder of a pod made before the infra process took that job."""
    try:
        pids = [int(x) for x in pidfile.read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()

