"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim import __version__
from cri_shim.criapi import api_pb2 as pb
from cri_shim.network.cni_config import NoNetworkConfig, load_default_network
from cri_shim.runtime_handlers import resolve_binary

if TYPE_CHECKING:
    from cri_shim.server.services import Services

RUNTIME_NAME = "cri-shim"
RUNTIME_API_VERSION = "v1"


class RuntimeInfoRPCs:
    services: Services

    def Version(self, request: pb.VersionRequest, context: object) -> pb.VersionResponse:
        return pb.VersionResponse(
            version="0.1.0",  # the kubelet's own API version field; fixed by CRI
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    def Status(self, request: pb.StatusRequest, context: object) -> pb.StatusResponse:
        cfg = self.services.config
        handlers = self.services.handlers
        runtime = pb.RuntimeCondition(type="RuntimeReady", status=True)
        problems: list[str] = []
        default = handlers.handlers[handlers.default]
        if not default.available:
            problems.append(
                f"default runtime handler {default.name!r}: OCI runtime binary "
                f"{default.config.binary!r} not found"
            )
        if resolve_binary(cfg.conmon) is None:
            problems.append(f"container monitor {cfg.conmon!r} not found")
        if problems:
            runtime.status = False
            runtime.reason = "RuntimeNotReady"
            runtime.message = "; ".join(problems)
        network = pb.RuntimeCondition(type="NetworkReady", status=True)
        try:
            load_default_network(cfg.cni.conf_dir, cfg.cni.bin_dirs)
        except NoNetworkConfig as e:
            network.status = False
            network.reason = "NetworkPluginNotReady"
            network.message = f"network plugin is not ready: {e}"
        resp = pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=[runtime, network]),
            features=pb.RuntimeFeatures(supplemental_groups_policy=True),
        )
        for h in handlers.handlers.values():
            resp.runtime_handlers.append(pb.RuntimeHandler(
                name="" if h.name == handlers.default else h.name,
                features=pb.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=h.recursive_read_only_mounts,
                    user_namespaces=h.user_namespaces,
                ),
            ))
        # The default handler is also listed under its own name, as containerd does.
        resp.runtime_handlers.append(pb.RuntimeHandler(
            name=default.name,
            features=pb.RuntimeHandlerFeatures(
                recursive_read_only_mounts=default.recursive_read_only_mounts,
                user_namespaces=default.user_namespaces,
            ),
        ))
        if request.verbose:
            doc = cfg.to_dict()
            # containerd's key, which critest reads: the parent of "stateDir" is where it checks
            # that idmapped mounts work, for the rootfs lives below it. Ours: <root_dir>/rootfs.
            doc["stateDir"] = str(Path(cfg.root_dir) / "rootfs")
            resp.info["config"] = json.dumps(doc, sort_keys=True)
            resp.info["runtimeHandlers"] = json.dumps({
                h.name: {
                    "binary": h.config.binary,
                    "path": h.path,
                    "root": str(h.root),
                    "available": h.available,
                }
                for h in handlers.handlers.values()
            }, sort_keys=True)
            resp.info["conmon"] = json.dumps(shutil.which(cfg.conmon) or resolve_binary(cfg.conmon))
        return resp

    def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: object
    ) -> pb.RuntimeConfigResponse:
        driver = pb.CGROUPFS if self.services.config.cgroup_driver == "cgroupfs" else pb.SYSTEMD
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: object
    ) -> pb.UpdateRuntimeConfigResponse:
        # The kubelet sends the node's pod CIDR. Nothing here uses it: the CNI configuration on
        # disk names the pod network (as with containerd when its CNI config has no template).
        return pb.UpdateRuntimeConfigResponse()
