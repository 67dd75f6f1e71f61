"""LinuxContainerResources: the values runc writes to cgroup files, checked against what the
kernel (and runc's conversions for cgroup v2) accept, so that a bad value is refused by name
instead of coming back from runc as an opaque write error, or being taken silently."""

from __future__ import annotations

import re

from cri_shim.criapi import api_pb2 as pb
from cri_shim.validation import cpu_lists
from cri_shim.validation.fields import FieldError, int_range, item, no_nul, show, single_line
from cri_shim.validation.host import HostFacts

# cpu.cfs_period_us: the kernel refuses periods under 1 ms or over 1 s
# (min_cfs_quota_period, max_cfs_quota_period in kernel/sched/core.c).
CPU_PERIOD = (1000, 1_000_000)
# cpu.cfs_quota_us: at least 1 ms too, and at most max_cfs_runtime (MAX_BW microseconds,
# 2**44 - 1, about 203 days). -1 is "no limit"; other negatives the kernel also takes as
# "no limit" without a word, which hides a caller's bug.
CPU_QUOTA = (1000, (1 << 44) - 1)
# cpu.shares: MIN_SHARES..MAX_SHARES. cgroup v1 clamps silently; on v2 runc maps shares to
# cpu.weight 1..10000 and the kernel refuses anything past it. The kubelet's minimum is 2.
CPU_SHARES = (2, 262_144)
# Docker's historic minimum memory limit (linuxMinMemory, 6 MiB); below it a container
# cannot even start its runtime's init before the OOM killer fires. (CRI-O uses 12 MiB.)
MIN_MEMORY = 6 << 20
# oom_score_adj: OOM_SCORE_ADJ_MIN..OOM_SCORE_ADJ_MAX; the kernel answers EINVAL outside.
OOM_SCORE_ADJ = (-1000, 1000)
_PAGE_SIZE = re.compile(r"([0-9]+)(KB|MB|GB|TB|PB)")
# The kubelet names huge page sizes with binary multiples spelled KB/MB/GB (hugetlb.2MB.*).
_UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


def check_resources(path: str, r: pb.LinuxContainerResources, host: HostFacts, *,
                    min_memory: int = MIN_MEMORY) -> None:
    """`min_memory` is 0 for a pod's overhead, an amount added to limits rather than a limit."""
    _cpu(path, r)
    _memory(path, r, min_memory)
    int_range(f"{path}.oom_score_adj", r.oom_score_adj, *OOM_SCORE_ADJ)
    _cpuset(f"{path}.cpuset_cpus", r.cpuset_cpus, host.cpus, "CPU")
    _cpuset(f"{path}.cpuset_mems", r.cpuset_mems, host.memory_nodes, "memory node")
    for i, h in enumerate(r.hugepage_limits):
        _hugepage(item(f"{path}.hugepage_limits", i), h, host.hugepage_sizes)
    for key, value in r.unified.items():
        _unified(item(f"{path}.unified", key), key, value)


def _cpu(path: str, r: pb.LinuxContainerResources) -> None:
    int_range(f"{path}.cpu_period", r.cpu_period, *CPU_PERIOD, also=(0,))
    int_range(f"{path}.cpu_quota", r.cpu_quota, *CPU_QUOTA, also=(0, -1))
    int_range(f"{path}.cpu_shares", r.cpu_shares, *CPU_SHARES, also=(0,))


def _memory(path: str, r: pb.LinuxContainerResources, min_memory: int) -> None:
    limit, swap = r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes
    if limit < 0 or 0 < limit < min_memory:
        raise FieldError(f"{path}.memory_limit_in_bytes",
                         f"{limit} is below the minimum of {min_memory} bytes (0 means no limit)")
    if swap in (0, -1):
        return
    where = f"{path}.memory_swap_limit_in_bytes"
    if swap < 0:
        raise FieldError(where, f"{swap} is negative (-1 means no limit, 0 unset)")
    # The swap value is memory plus swap; runc refuses it without a memory limit to add to.
    if limit == 0:
        raise FieldError(where, f"{swap} is set without memory_limit_in_bytes")
    if swap < limit:
        raise FieldError(where, f"{swap} is below memory_limit_in_bytes {limit}: it counts memory plus swap")


def _cpuset(path: str, text: str, present: frozenset[int], what: str) -> None:
    no_nul(path, text)
    try:
        ranges = cpu_lists.parse_ranges(text)
    except ValueError as e:
        raise FieldError(path, f"{show(text)} is not a list like '0-3,5': {e}") from None
    gone = cpu_lists.first_missing(ranges, present)
    if gone is not None:
        raise FieldError(path, f"{show(text)} names {what} {gone}, which this host does not have "
                               f"(it has {cpu_lists.format_list(present) or 'none'})")


def page_size_bytes(text: str) -> int | None:
    """The bytes of a page size such as "2MB"; None when it is not a size the kubelet writes."""
    m = _PAGE_SIZE.fullmatch(text)
    return int(m.group(1)) * _UNITS[m.group(2)] if m else None


def _hugepage(path: str, h: pb.HugepageLimit, sizes: frozenset[int]) -> None:
    where = f"{path}.page_size"
    no_nul(where, h.page_size)
    size = page_size_bytes(h.page_size)
    if size is None:
        raise FieldError(where, f"{show(h.page_size)} is not a page size like '2MB' or '1GB'")
    if size not in sizes:
        known = ", ".join(_format_size(s) for s in sorted(sizes)) or "none"
        raise FieldError(where, f"{show(h.page_size)} is not a huge page size of this host ({known})")
    # limit is a uint64; runc and the kernel take it as a signed 64-bit byte count.
    if h.limit >= 1 << 63:
        raise FieldError(f"{path}.limit", f"{h.limit} does not fit in a signed 64-bit byte count")


def _format_size(size: int) -> str:
    for unit, factor in reversed(_UNITS.items()):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _unified(path: str, key: str, value: str) -> None:
    # A key names a file in the container's cgroup directory: nothing that walks out of it.
    no_nul(path, key)
    if not key or "/" in key or key in (".", ".."):
        raise FieldError(path, "the key must be a cgroup file name such as 'memory.high'")
    single_line(path, value)
