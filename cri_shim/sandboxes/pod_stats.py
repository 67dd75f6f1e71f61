"""PodSandboxStats: the sum of the pod's containers plus the pod network's counters."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cri_shim.criapi import api_pb2 as pb


def parse_net_dev(text: str) -> dict[str, tuple[int, int, int, int]]:
    """/proc/net/dev -> {iface: (rx_bytes, rx_errors, tx_bytes, tx_errors)}."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = rest.split()
        if len(f) >= 16:
            out[name.strip()] = (int(f[0]), int(f[2]), int(f[8]), int(f[10]))
    return out


async def read_net_dev(netns: str, pids: list[int]) -> str:
    """A process inside the pod's netns gives its /proc/<pid>/net/dev; else enter the pin."""
    for pid in pids:
        try:
            return Path(f"/proc/{pid}/net/dev").read_text()
        except OSError:
            continue
    if not netns or not Path(netns).exists():
        return ""
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={netns}", "cat", "/proc/net/dev",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return out.decode() if proc.returncode == 0 else ""


def network_usage(text: str, ts: int) -> pb.NetworkUsage | None:
    counters = parse_net_dev(text)
    if not counters:
        return None
    usage = pb.NetworkUsage(timestamp=ts)
    for name, (rxb, rxe, txb, txe) in sorted(counters.items()):
        if name == "lo":
            continue
        iface = pb.NetworkInterfaceUsage(name=name)
        iface.rx_bytes.value, iface.rx_errors.value = rxb, rxe
        iface.tx_bytes.value, iface.tx_errors.value = txb, txe
        usage.interfaces.append(iface)
        if name == "eth0":
            usage.default_interface.CopyFrom(iface)
    return usage


def sum_containers(stats: list[pb.ContainerStats], ts: int) -> tuple[pb.CpuUsage, pb.MemoryUsage]:
    cpu = pb.CpuUsage(timestamp=ts)
    mem = pb.MemoryUsage(timestamp=ts)
    cpu.usage_core_nano_seconds.value = sum(s.cpu.usage_core_nano_seconds.value for s in stats)
    mem.working_set_bytes.value = sum(s.memory.working_set_bytes.value for s in stats)
    mem.usage_bytes.value = sum(s.memory.usage_bytes.value for s in stats)
    mem.rss_bytes.value = sum(s.memory.rss_bytes.value for s in stats)
    return cpu, mem


def now() -> int:
    return time.time_ns()
