"""ExecSync's mechanics, whatever runs the process: one output budget for stdout and stderr,
and on a time-out the exec'd process tree killed and reaped, not just the runtime's command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

# stdout and stderr of one ExecSync share this budget, so the reply (both, their markers
# and the framing) stays under gRPC's 16 MiB message limit.
EXEC_OUTPUT_LIMIT = 15 << 20
TRUNCATED_MARKER = b"\n[cri-shim: output truncated at 15 MiB]\n"
# How long an exec'd process killed at its timeout may take to be reaped by the runtime.
EXEC_REAP_TIMEOUT = 5.0


class OutputBudget:
    """Bytes an exec's stdout and stderr may still keep, shared between the two."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, n: int) -> int:
        granted = min(n, self.left)
        self.left -= granted
        return granted


async def read_capped(stream: asyncio.StreamReader, budget: OutputBudget) -> bytes:
    buf = bytearray()
    truncated = False
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        keep = budget.take(len(chunk))
        buf += chunk[:keep]
        if keep < len(chunk):
            truncated = True  # keep draining so the process is not blocked on a full pipe
    return bytes(buf) + (TRUNCATED_MARKER if truncated else b"")


async def kill_exec(proc: asyncio.subprocess.Process, pid_file: Path) -> None:
    """Kill a timed-out exec'd process and let the runtime's exec command reap it.

    Killing only the runtime's `exec` would leave the process (or its zombie, when the
    container's init does not reap) behind in the container, where `pgrep` still sees it.
    """
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        pid = 0  # not started yet: the runtime's exec is all there is to stop
    if pid:
        await kill_tree(pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), EXEC_REAP_TIMEOUT)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def kill_tree(pid: int, rounds: int = 50) -> None:
    """SIGKILL pid and its descendants, leaves first, each round after the last one's were reaped.

    A parent must outlive its children long enough to reap them: a zombie handed to a
    container init that never reaps (sleep, tail) would outlive the exec for good.
    """
    for _ in range(rounds):
        live = [p for p in _descendants(pid) if not _is_zombie(p)]
        if not live:
            break
        for leaf in (p for p in live if not _children(p)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leaf, signal.SIGKILL)
        await asyncio.sleep(0.02)
    for victim in [*_descendants(pid), pid]:  # whatever would not wait its turn
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    """pid's descendants, deepest first."""
    out: list[int] = []
    for child in _children(pid):
        out += _descendants(child)
        out.append(child)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone counts as done
    return stat.rpartition(")")[2].split()[0] == "Z"
