"""Which capabilities the runtimes under test cannot hold: they inherit our bounding set."""

from __future__ import annotations

from pathlib import Path

from oci.pyrunc.caps import NAMES


def bounding_set() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapBnd in /proc/self/status")


def outside_bounding_set() -> list[str]:
    """Capability names the kernel knows and our bounding set lacks (CAP_SYS_RESOURCE on hosts
    that withhold it from root), in number order."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    bnd = bounding_set()
    return [NAMES[n] for n in range(min(last + 1, len(NAMES))) if not bnd >> n & 1]
