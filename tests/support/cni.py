"""A CNI bridge network configuration of its own, for tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path


def write_bridge_network(conf_dir: Path, name: str, bridge: str, subnet: str, ipam_dir: Path,
                         portmap: bool = False, file_name: str = "") -> Path:
    """conf_dir/file_name (default 10-<name>.conflist): a bridge (gateway, no masquerade) with
    host-local IPAM in ipam_dir, then portmap if asked, then loopback."""
    plugins: list[dict[str, object]] = [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)}},
    ]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    plugins.append({"type": "loopback"})
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / (file_name or f"10-{name}.conflist")
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": plugins}))
    return path
