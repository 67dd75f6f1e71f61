"""PodSandboxConfig: names, hostname, log directory, DNS, ports, cgroup parent, sysctls."""

from __future__ import annotations

import ipaddress
import re

from cri_shim.criapi import api_pb2 as pb
from cri_shim.validation.cgroup_parent import check_cgroup_parent
from cri_shim.validation.fields import (
    FieldError,
    absolute_path,
    int_range,
    item,
    no_dot_dot,
    no_nul,
    no_nul_keys,
    show,
    single_line,
)
from cri_shim.validation.host import HostFacts
from cri_shim.validation.resources import check_resources
from cri_shim.validation.sysctls import check_sysctls

# sethostname(2) takes at most HOST_NAME_MAX (64) bytes.
MAX_HOSTNAME = 64
# RFC 1123 labels: letters, digits and '-', starting and ending with a letter or digit.
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
PORTS = (1, 65535)


def check_pod_config(path: str, cfg: pb.PodSandboxConfig, driver: str, host: HostFacts) -> None:
    md = cfg.metadata
    for name in ("name", "namespace", "uid"):
        no_nul(f"{path}.metadata.{name}", getattr(md, name))
    _hostname(f"{path}.hostname", cfg.hostname)
    _log_directory(f"{path}.log_directory", cfg.log_directory)
    _dns(f"{path}.dns_config", cfg.dns_config)
    for i, pm in enumerate(cfg.port_mappings):
        _port_mapping(item(f"{path}.port_mappings", i), pm)
    no_nul_keys(f"{path}.labels", cfg.labels)
    no_nul_keys(f"{path}.annotations", cfg.annotations)
    linux = cfg.linux
    check_cgroup_parent(f"{path}.linux.cgroup_parent", linux.cgroup_parent, driver)
    check_sysctls(f"{path}.linux.sysctls", linux.sysctls, host)
    check_resources(f"{path}.linux.resources", linux.resources, host)
    check_resources(f"{path}.linux.overhead", linux.overhead, host, min_memory=0)
    _security_context(f"{path}.linux.security_context", linux.security_context)


def _hostname(path: str, value: str) -> None:
    # Empty is fine: the node's hostname is used, as containerd and CRI-O do.
    if not value:
        return
    if len(value.encode()) > MAX_HOSTNAME:
        raise FieldError(path, f"{show(value)} is longer than {MAX_HOSTNAME} bytes")
    if not _HOSTNAME.fullmatch(value):
        raise FieldError(path, f"{show(value)} is not a hostname: letters, digits, '-' and '.' only, "
                               "each part starting and ending with a letter or digit")


def _log_directory(path: str, value: str) -> None:
    # Created by the daemon: a relative path would land in the daemon's working directory.
    absolute_path(path, value, required=False)
    no_dot_dot(path, value)


def _dns(path: str, dns: pb.DNSConfig) -> None:
    # Each value becomes part of a line of resolv.conf: a line break would add lines.
    for i, server in enumerate(dns.servers):
        where = item(f"{path}.servers", i)
        single_line(where, server)
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise FieldError(where, f"{show(server)} is not an IP address") from None
    for field in ("searches", "options"):
        for i, value in enumerate(getattr(dns, field)):
            single_line(item(f"{path}.{field}", i), value)


def _port_mapping(path: str, pm: pb.PortMapping) -> None:
    if pm.protocol not in pb.Protocol.values():
        raise FieldError(f"{path}.protocol", f"{pm.protocol} is not one of "
                                             f"{', '.join(pb.Protocol.keys())}")
    int_range(f"{path}.container_port", pm.container_port, *PORTS)
    int_range(f"{path}.host_port", pm.host_port, *PORTS, also=(0,))
    if pm.host_ip:
        no_nul(f"{path}.host_ip", pm.host_ip)
        try:
            ipaddress.ip_address(pm.host_ip)
        except ValueError:
            raise FieldError(f"{path}.host_ip", f"{show(pm.host_ip)} is not an IP address") from None


def _security_context(path: str, sc: pb.LinuxSandboxSecurityContext) -> None:
    # A Localhost seccomp profile is a file the daemon opens.
    no_nul(f"{path}.seccomp.localhost_ref", sc.seccomp.localhost_ref)
    no_nul(f"{path}.seccomp_profile_path", sc.seccomp_profile_path)
    check_userns(f"{path}.namespace_options", sc.namespace_options)


MAX_ID = 1 << 32  # ids are 32-bit; (uid_t)-1 is never mapped


def check_userns(path: str, ns: pb.NamespaceOption) -> None:
    """A pod's user namespace (Kubernetes hostUsers: false): mode NODE, or POD with exactly one
    uid and one gid mapping that maps the pod's root; CONTAINER and TARGET do not exist for
    user namespaces (as containerd and CRI-O answer)."""
    if not ns.HasField("userns_options"):
        return
    u = ns.userns_options
    where = f"{path}.userns_options"
    if u.mode == pb.NODE:
        if u.uids or u.gids:
            raise FieldError(f"{where}.uids", "mode NODE takes no mappings")
        return
    if u.mode != pb.POD:
        raise FieldError(f"{where}.mode", f"{pb.NamespaceMode.Name(u.mode)} is not supported for user "
                                          "namespaces (only POD or NODE)")
    for kind, maps in (("uids", u.uids), ("gids", u.gids)):
        if len(maps) != 1:
            raise FieldError(f"{where}.{kind}", f"mode POD needs exactly one mapping, got {len(maps)}")
        m = maps[0]
        if m.container_id != 0:
            raise FieldError(f"{where}.{kind}[0]", f"container id 0 must be mapped (the mapping starts at "
                                                  f"container id {m.container_id})")
        if m.length == 0:
            raise FieldError(f"{where}.{kind}[0].length", "must be at least 1")
        if m.host_id + m.length >= MAX_ID:
            raise FieldError(f"{where}.{kind}[0]", f"host ids {m.host_id}..{m.host_id + m.length - 1} go "
                                                  "past 4294967294")
    for kind in ("network", "pid", "ipc"):
        if getattr(ns, kind) == pb.NODE:
            raise FieldError(f"{path}.{kind}", "a pod with its own user namespace cannot use the node's "
                                              f"{kind} namespace")
