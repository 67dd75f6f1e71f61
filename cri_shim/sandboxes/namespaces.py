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
from cri_shim.ports import UserNamespace

NS_KINDS = ("net", "ipc", "uts")
MS_BIND = 0x1000


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise Internal(f"{' '.join(argv)}: {(err or out).decode(errors='replace').strip()}")


async def pin_namespaces(pins: dict[str, Path], hostname: str, userns: UserNamespace | None = None) -> None:
    """Create new namespaces for each kind in `pins` (user/net/ipc/uts) bound to those files.

    The hostname is set inside the new UTS namespace, and loopback brought up in the
    new network namespace (the CNI loopback plugin may do it again; harmless).
    With a user namespace (`userns`, pinned at pins["user"]) the others are created inside
    it, so the pod's root owns them (sysfs, sysctls, hostname work from the containers).
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
    if userns is None:
        await _run(*args, "--", "/bin/sh", "-ec", "; ".join(script) or "true", "pin", hostname)
        return
    await _made_with_mappings(pins, userns)
    if script:
        # as the host's root, which holds every capability over the new namespaces
        enter = ["nsenter"] + [f"--{kind}={p}" for kind, p in pins.items() if kind in ("net", "uts")]
        await _run(*enter, "--", "/bin/sh", "-ec", "; ".join(script), "pin", hostname)


USERNS_TIMEOUT = 10.0


async def _made_with_mappings(pins: dict[str, Path], userns: UserNamespace) -> None:
    """Run `unshare --user --net ...` (the others owned by the new user namespace), write the
    user namespace's uid and gid maps from out here while its shell waits, and pin every
    namespace with a bind mount of /proc/PID/ns/KIND. util-linux can do neither itself: it
    writes multi-range maps only through newuidmap, and its own pinning of namespaces that
    belong to a new user namespace fails with EPERM (it mounts them before exec)."""
    unshare = ["unshare", *(f"--{kind}" for kind in pins)]
    proc = await asyncio.create_subprocess_exec(
        *unshare, "--", "/bin/sh", "-c", "echo ready; read _", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    line = b""
    try:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), USERNS_TIMEOUT)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            err = (await proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
            raise Internal(f"{' '.join(unshare)}: {err or 'no user namespace'}")
        try:
            for kind, maps in (("uid", userns.uid_mappings), ("gid", userns.gid_mappings)):
                with open(f"/proc/{proc.pid}/{kind}_map", "w") as f:
                    f.write("".join(f"{c} {h} {n}\n" for c, h, n in maps))
        except OSError as e:
            raise Internal(f"writing the {kind} map of the pod's user namespace: {e.strerror}") from None
        for kind, path in pins.items():
            mounts.mount(f"/proc/{proc.pid}/ns/{kind}", path, "", MS_BIND, "", f"the pod's {kind} namespace")
    finally:
        proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None and not line:
                proc.kill()
        await proc.wait()


def unpin(path: Path) -> None:
    """Unmount a pin (detached, so a namespace still in use stays alive for its users)."""
    mounts.unmount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def sysctls_in(pins: dict[str, Path], values: dict[str, str]) -> None:
    """Write sysctls from inside the pod's namespaces (net.* and IPC sysctls are per namespace)."""
    if not values:
        return
    # as the host's root, which holds every capability over a pod's user namespace too
    enter = ["nsenter"] + [f"--{kind}={p}" for kind, p in pins.items() if kind != "user"]
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

