"""What `cri-shim install` puts on a node: the systemd unit, a default configuration and
crictl's configuration, all under a root directory ("/" on a real node, a temporary one in
tests). Existing configuration files are kept; the unit is the package's and is replaced."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from cri_shim.config import Config, to_toml

UNIT_PATH = "etc/systemd/system/cri-shim.service"
CONFIG_PATH = "etc/cri-shim/config.toml"
CRICTL_PATH = "etc/crictl.yaml"


def unit_text(executable: str, config_path: str = "/" + CONFIG_PATH) -> str:
    """The unit: notify readiness once the socket answers; conmon and the containers live in
    the unit's cgroup but survive a restart of the daemon (KillMode=process), as containerd's
    shims do; the daemon manages cgroups below its own (Delegate=yes)."""
    exec_start = shlex.join([executable, "serve", "--config", config_path])
    return f"""[Unit]
Description=cri-shim, a Kubernetes container runtime (CRI)
Documentation=https://kubernetes.io/docs/concepts/architecture/cri/
After=network-online.target local-fs.target
Wants=network-online.target
Before=kubelet.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# SIGHUP re-reads the image index (after an offline `cri-shim images import`)
ExecReload=/bin/kill -HUP $MAINPID
# only the daemon is stopped: conmon and the containers keep running across a restart
KillMode=process
Delegate=yes
Restart=on-failure
RestartSec=2
TimeoutStartSec=120
TimeoutStopSec=30
# a node's runtime outlives memory pressure; its containers are the ones to go
OOMScoreAdjust=-999
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity

[Install]
WantedBy=multi-user.target
"""


def crictl_yaml(socket: str) -> str:
    endpoint = f"unix://{socket}"
    return (f"runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\n"
            f"timeout: 30\ndebug: false\npull-image-on-create: false\n")


@dataclass(frozen=True)
class Installed:
    path: Path
    written: bool  # False: an existing file was kept


def install(root: Path, executable: str, config: Config | None = None) -> list[Installed]:
    """Write the unit (always) and the default configuration and crictl.yaml (when absent)."""
    cfg = config or Config()
    results = []
    for rel, text, keep in ((UNIT_PATH, unit_text(executable), False),
                            (CONFIG_PATH, to_toml(cfg), True),
                            (CRICTL_PATH, crictl_yaml(cfg.socket), True)):
        path = root / rel
        if keep and path.exists():
            results.append(Installed(path, False))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
        results.append(Installed(path, True))
    return results
