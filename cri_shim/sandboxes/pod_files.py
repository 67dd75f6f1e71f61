"""The files every container of a pod shares: hostname, /etc/hosts, resolv.conf."""

from __future__ import annotations

from pathlib import Path

from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument

HOST_RESOLV = Path("/etc/resolv.conf")
MAX_SEARCHES = 32


def hosts_file(hostname: str, ips: list[str]) -> str:
    lines = [
        "# Kubernetes-managed hosts file (written by cri-shim).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    for ip in ips:
        lines.append(f"{ip}\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(dns: pb.DNSConfig, host_resolv: Path = HOST_RESOLV) -> str:
    """From the pod's DNSConfig; the host's file when the config is empty (ClusterFirst off)."""
    if not dns.servers and not dns.searches and not dns.options:
        try:
            return host_resolv.read_text()
        except OSError:
            return ""
    for s in dns.servers:
        if not s or any(c.isspace() for c in s):
            raise InvalidArgument(f"DNS server {s!r} is not a valid address")
    if len(dns.searches) > MAX_SEARCHES:
        raise InvalidArgument(f"{len(dns.searches)} DNS search domains; at most {MAX_SEARCHES} allowed")
    out = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        out.append("search " + " ".join(dns.searches))
    if dns.options:
        out.append("options " + " ".join(dns.options))
    return "\n".join(out) + "\n"
