"""Facts of this host that decide whether a request can work: CPUs, memory nodes, huge page
sizes, sysctls. Validation asks a HostFacts; tests pass a fixed one instead of the live host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

from cri_shim.validation.cpu_lists import parse_list

CPU_ONLINE = Path("/sys/devices/system/cpu/online")
NODE_ONLINE = Path("/sys/devices/system/node/online")
HUGEPAGES = Path("/sys/kernel/mm/hugepages")
PROC_SYS = Path("/proc/sys")


class HostFacts(Protocol):
    @property
    def cpus(self) -> frozenset[int]: ...

    @property
    def memory_nodes(self) -> frozenset[int]: ...

    @property
    def hugepage_sizes(self) -> frozenset[int]:
        """Supported huge page sizes in bytes."""
        ...

    def sysctl_exists(self, name: str) -> bool:
        """Whether the dotted sysctl `name` (already checked for '/' and '..') is a file here."""
        ...


class LiveHost:
    """Reads each fact on first use: most requests need none of them."""

    @cached_property
    def cpus(self) -> frozenset[int]:
        try:
            return parse_list(CPU_ONLINE.read_text().strip())
        except (OSError, ValueError):
            # Without sysfs the CPUs we may run on are the best answer there is.
            return frozenset(os.sched_getaffinity(0))

    @cached_property
    def memory_nodes(self) -> frozenset[int]:
        try:
            return parse_list(NODE_ONLINE.read_text().strip())
        except (OSError, ValueError):
            # A kernel without NUMA support has no node directory and exactly one node, 0.
            return frozenset({0})

    @cached_property
    def hugepage_sizes(self) -> frozenset[int]:
        try:
            names = [p.name for p in HUGEPAGES.iterdir()]
        except OSError:
            return frozenset()
        sizes = set()
        for name in names:  # hugepages-2048kB
            kb = name.removeprefix("hugepages-").removesuffix("kB")
            if kb.isdigit():
                sizes.add(int(kb) * 1024)
        return frozenset(sizes)

    def sysctl_exists(self, name: str) -> bool:
        return (PROC_SYS / name.replace(".", "/")).is_file()


@dataclass
class FixedHost:
    """Given facts, for tests and for callers that already know them."""

    cpus: frozenset[int] = frozenset({0, 1})
    memory_nodes: frozenset[int] = frozenset({0})
    hugepage_sizes: frozenset[int] = frozenset({2 << 20, 1 << 30})
    sysctls: frozenset[str] = field(default_factory=frozenset)

    def sysctl_exists(self, name: str) -> bool:
        return name in self.sysctls
