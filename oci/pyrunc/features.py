"""`pyrunc features`: what this runtime implements, in runc's features JSON shape."""

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any


def features() -> "dict[str, Any]":
    from . import caps, seccomp
    from .init import NS_FLAGS
    from .mounts import MOUNT_OPTIONS
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": sorted(NS_FLAGS),
            "capabilities": caps.NAMES,
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": seccomp.ACTIONS,
                "operators": sorted(seccomp.OPERATORS),
                "archs": sorted(seccomp.ARCHES),
                "knownFlags": [],
                "supportedFlags": [],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
        },
        "annotations": {"io.github.cri-shim.pyrunc.devices.v2": "unsupported: cgroup v2 eBPF device filter"},
    }
