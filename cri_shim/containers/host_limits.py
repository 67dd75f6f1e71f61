"""What the daemon itself may grant: its capability bounding set and lowest oom_score_adj.

A container cannot get more than the process that creates it holds. "All capabilities"
(privileged, or add ALL) therefore means the daemon's bounding set, as containerd derives
it, and an oom_score_adj below what the daemon may set is raised to that floor, as
containerd's restrict_oom_score_adj does; both are detected here, not configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from oci.builder import ALL_CAPABILITIES

CAP_SYS_RESOURCE = ALL_CAPABILITIES.index("CAP_SYS_RESOURCE")


@dataclass(frozen=True)
class HostLimits:
    capabilities: tuple[str, ...] = ALL_CAPABILITIES
    min_oom_score_adj: int = -1000

    def clamp_oom_score_adj(self, value: int) -> int:
        return max(value, self.min_oom_score_adj)


def capabilities_from_mask(mask: int) -> tuple[str, ...]:
    """Names of the capabilities set in a /proc/<pid>/status Cap* mask (bit n = capability n)."""
    return tuple(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


def parse_status(text: str) -> dict[str, int]:
    """The Cap* masks of a /proc/<pid>/status text."""
    masks = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            masks[key] = int(value.strip(), 16)
    return masks


def limits_from(status_text: str, own_oom_score_adj: int) -> HostLimits:
    masks = parse_status(status_text)
    bounding = capabilities_from_mask(masks.get("CapBnd", (1 << len(ALL_CAPABILITIES)) - 1))
    # Lowering oom_score_adj below the value a process started with needs CAP_SYS_RESOURCE.
    may_lower = bool(masks.get("CapEff", 0) >> CAP_SYS_RESOURCE & 1)
    return HostLimits(bounding, -1000 if may_lower else own_oom_score_adj)


@cache
def host_limits() -> HostLimits:
    """This process's limits, read once."""
    try:
        status = Path("/proc/self/status").read_text()
        own = int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return HostLimits()
    return limits_from(status, own)
