"""The kernel's list format for CPUs and memory nodes ("0-3,5"), as cpuset.cpus and
/sys/devices/system/cpu/online write it."""

from __future__ import annotations

import re

# ASCII digits only: \d would also take digits of other scripts, which int() reads and the
# kernel does not.
_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
# Ranges are checked against the host before being expanded; this only bounds a range
# that is never compared (parse_list of the host's own files).
_MAX_EXPANDED = 1 << 16


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """Parse "0-3,5" into [(0, 3), (5, 5)]; ValueError saying what is wrong. Empty is no ranges.

    Only plain numbers and ranges: the kubelet writes nothing else, and the kernel's
    stride form ("0-8:2/4") is not something a CRI client sends.
    """
    if not text:
        return []
    out = []
    for part in text.split(","):
        m = _ITEM.fullmatch(part)
        if m is None:
            raise ValueError(f"{part!r} is not a number or a range like 0-3")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        if high < low:
            raise ValueError(f"range {part!r} runs backwards")
        out.append((low, high))
    return out


def parse_list(text: str) -> frozenset[int]:
    ranges = parse_ranges(text)
    if sum(high - low + 1 for low, high in ranges) > _MAX_EXPANDED:
        raise ValueError(f"{text!r} names too many entries")
    return frozenset(n for low, high in ranges for n in range(low, high + 1))


def format_list(values: frozenset[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5"."""
    parts: list[str] = []
    ordered = sorted(values)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def first_missing(ranges: list[tuple[int, int]], present: frozenset[int]) -> int | None:
    """The first entry of `ranges` not in `present`; cheap even for a range like 0-4294967295."""
    top = max(present, default=-1)
    for low, high in ranges:
        for n in range(low, min(high, top) + 1):
            if n not in present:
                return n
        if high > top:
            return max(low, top + 1)
    return None
