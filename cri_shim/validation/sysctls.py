"""Sysctl names and values: a name becomes a path under /proc/sys, a value one write to it."""

from __future__ import annotations

import re
from collections.abc import Mapping

from cri_shim.validation.fields import FieldError, item, no_nul, show, single_line
from cri_shim.validation.host import HostFacts

# Segments of letters, digits, '_' and '-', joined by single dots. No '/', so no path
# tricks, and no empty segment, so no '..'.
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# Per-interface sysctls of an interface that exists only inside the pod (its eth0, made
# by CNI after the sysctls are checked) mirror the "default" entry of the same family.
_PER_INTERFACE = re.compile(r"(net\.ipv[46]\.(?:conf|neigh))\.([^.]+)\.(.+)")
MAX_NAME = 253  # as Kubernetes' validation: a name must fit in a DNS subdomain


def check_sysctls(path: str, sysctls: Mapping[str, str], host: HostFacts) -> None:
    for name, value in sysctls.items():
        where = item(path, name)
        check_name(where, name, host)
        single_line(where, value)


def check_name(where: str, name: str, host: HostFacts) -> None:
    no_nul(where, name)
    if "/" in name or ".." in name:
        # sysctl(8) accepts '/' as a separator; we only take the dotted form, which is what
        # reaches /proc/sys after a plain '.' -> '/' swap without any way to climb out.
        raise FieldError(where, f"{show(name)} must be a dotted sysctl name without '/' or '..'")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise FieldError(where, f"{show(name)} is not a sysctl name like 'net.ipv4.ip_forward'")
    if not _exists(name, host):
        raise FieldError(where, f"{show(name)} is not a sysctl of this kernel (no /proc/sys entry)")


def _exists(name: str, host: HostFacts) -> bool:
    if host.sysctl_exists(name):
        return True
    m = _PER_INTERFACE.fullmatch(name)
    return m is not None and host.sysctl_exists(f"{m.group(1)}.default.{m.group(3)}")
