"""Pure helpers over image manifests and configs: which manifest of an index fits this host,
layer chain IDs, and strict JSON parsing. Shared by pulls (imaging.manager) and offline
imports (imaging.archive_import)."""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

from cri_shim.errors import InvalidArgument, NotFound

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_platform() -> tuple[str, str, str]:
    machine = platform.machine()
    arch = GOARCH.get(machine, machine)
    variant = "v8" if arch == "arm64" else ("v7" if arch == "arm" else "")
    return "linux", arch, variant


def select_platform(index: dict[str, Any], ref: str) -> str:
    """The manifest digest for this host's platform (variant optional when absent)."""
    os_, arch, variant = host_platform()
    candidates = []
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch:
            if not p.get("variant") or not variant or p.get("variant") == variant:
                candidates.append(m)
    if not candidates:
        raise NotFound(f"image {ref}: no manifest for platform {os_}/{arch} in its index")
    return str(candidates[0]["digest"])


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or InvalidArgument naming `what`."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise InvalidArgument(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return doc
