"""The CRI views of a pod record: pb.PodSandbox (ListPodSandbox and its filter),
pb.PodSandboxStatus, and the container side's view of a pod (cri_shim.ports.PodInfo). Pure
functions of the in-memory record; the verbose status and the hostname read the pod's files."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from cri_shim.containers.spec_gen import PodContext
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import View, field_entry, kept_view
from cri_shim.id_lookup import labels_match
from cri_shim.ports import PodInfo
from cri_shim.sandboxes.store import CREATING, NOTREADY, READY

if TYPE_CHECKING:
    from cri_shim.sandboxes.manager import Sandbox

STATE_TO_PB = {CREATING: pb.SANDBOX_NOTREADY, READY: pb.SANDBOX_READY, NOTREADY: pb.SANDBOX_NOTREADY}


def sandbox_status(sb: Sandbox, verbose: bool) -> tuple[pb.PodSandboxStatus, dict[str, str]]:
    """The Status view (read-only: callers copy it), built once per state and addresses; the
    kubelet asks for it again and again while nothing changes."""
    info: dict[str, str] = {}
    if verbose:
        result = None
        with contextlib.suppress(OSError, ValueError):
            result = json.loads((sb.dir / "cni-result.json").read_text())
        info["info"] = json.dumps({
            "pid": sb.status.infra_pid or sb.status.holder_pid, "state": sb.status.state,
            "runtimeHandler": sb.meta.handler, "namespaces": {k: str(v) for k, v in sb.pins().items()},
            "cniResult": result, "cgroupParent": sb.meta.cgroup_parent,
            "infraCgroup": sb.meta.infra_cgroup, "dir": sb.meta.dir,
            "config": json.loads(_to_json(sb.config)),
        })
    return _status_view(sb)[2], info


def status_body(sb: Sandbox) -> bytes:
    """The Status view, encoded: built with it, once per state and addresses."""
    return _status_view(sb)[3]


def _status_view(sb: Sandbox) -> View[pb.PodSandboxStatus]:
    """(metadata, state and addresses, Status view, its encoding), rebuilt when either of the
    first two changes."""
    key = (sb.status.state, tuple(sb.status.ips))
    sb.status_view = v = kept_view(sb.status_view, sb.meta, key, lambda: _build_status(sb))
    return v


def _build_status(sb: Sandbox) -> pb.PodSandboxStatus:
    cfg = sb.config
    st = pb.PodSandboxStatus(
        id=sb.meta.id, metadata=cfg.metadata, state=STATE_TO_PB[sb.status.state],
        created_at=sb.meta.created_at, labels=cfg.labels, annotations=cfg.annotations,
        runtime_handler=sb.meta.handler,
    )
    if sb.status.ips:
        st.network.ip = sb.status.ips[0]
        st.network.additional_ips.extend(pb.PodIP(ip=ip) for ip in sb.status.ips[1:])
    st.linux.namespaces.options.CopyFrom(cfg.linux.security_context.namespace_options)
    return st


def matches(sb: Sandbox, f: pb.PodSandboxFilter | None) -> bool:
    """ListPodSandbox's filter: id by prefix, state, labels."""
    if f is None:
        return True
    if f.id and not sb.meta.id.startswith(f.id):
        return False
    if f.HasField("state") and STATE_TO_PB[sb.status.state] != f.state.state:
        return False
    return not f.label_selector or labels_match(sb.config.labels, f.label_selector)


# ListPodSandboxResponse.items, whose entries sandbox_entry encodes
ITEMS_FIELD = pb.ListPodSandboxResponse.DESCRIPTOR.fields_by_name["items"].number


def sandbox_entry(sb: Sandbox) -> bytes:
    """The List view as an entry of ListPodSandboxResponse.items, encoded once per state."""
    return _list_view(sb)[3]


def sandbox_pb(sb: Sandbox) -> pb.PodSandbox:
    """The List view of a pod, built once per state (read-only: List copies it)."""
    return _list_view(sb)[2]


def _list_view(sb: Sandbox) -> tuple[object, str, pb.PodSandbox, bytes]:
    """(metadata, state, List view, its encoded entry), rebuilt when either of the first two changes."""
    v = sb.view
    if v is not None and v[0] is sb.meta and v[1] == sb.status.state:
        return v
    cfg = sb.config
    msg = pb.PodSandbox(
        id=sb.meta.id, metadata=cfg.metadata, state=STATE_TO_PB[sb.status.state],
        created_at=sb.meta.created_at, labels=cfg.labels, annotations=cfg.annotations,
        runtime_handler=sb.meta.handler,
    )
    sb.view = v = (sb.meta, sb.status.state, msg, field_entry(ITEMS_FIELD, msg))
    return v


def pod_info(sb: Sandbox) -> PodInfo:
    """The container side's view of a pod (see cri_shim.ports.PodInfo)."""
    cfg = sb.config
    pins = sb.pins()
    pidns = f"/proc/{sb.status.holder_pid}/ns/pid" if sb.status.holder_pid else None
    ctx = PodContext(
        id=sb.meta.id, hostname=(sb.dir / "hostname").read_text().strip() if sb.dir.exists() else "",
        netns_path=str(pins["net"]) if "net" in pins else None,
        ipcns_path=str(pins["ipc"]) if "ipc" in pins else None,
        utsns_path=str(pins["uts"]) if "uts" in pins else None,
        pidns_path=pidns, host_pid=sb.meta.host_pid, cgroup_parent=sb.meta.cgroup_parent,
        hosts_path=str(sb.dir / "hosts"), resolv_path=str(sb.dir / "resolv.conf"),
        hostname_path=str(sb.dir / "hostname"),
        shm_path=str(sb.shm_path) if not sb.meta.host_ipc else "/dev/shm",
        sysctls=dict(cfg.linux.sysctls), annotations=dict(cfg.annotations),
        name=sb.meta.name, namespace=sb.meta.namespace, uid=sb.meta.uid,
        userns=sb.userns(),
    )
    return PodInfo(ctx, sb.meta.handler, cfg.log_directory, sb.status.state == READY, cfg)


def _to_json(msg: pb.PodSandboxConfig) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(msg)
