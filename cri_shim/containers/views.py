"""The CRI views of a container record: pb.Container (ListContainers and its filter) and
pb.ContainerStatus. Pure functions of the in-memory record; only the verbose status reads the
bundle's config.json."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cri_shim.containers import stop_signals
from cri_shim.containers.store import CREATED, CREATING, EXITED, RUNNING
from cri_shim.criapi import api_pb2 as pb
from cri_shim.encoded import View, field_entry, kept_view
from cri_shim.id_lookup import labels_match

if TYPE_CHECKING:
    from cri_shim.containers.manager import Container

STATE_TO_PB = {
    CREATING: pb.CONTAINER_UNKNOWN,
    CREATED: pb.CONTAINER_CREATED,
    RUNNING: pb.CONTAINER_RUNNING,
    EXITED: pb.CONTAINER_EXITED,
}


# ListContainersResponse.containers, whose entries container_entry encodes
CONTAINERS_FIELD = pb.ListContainersResponse.DESCRIPTOR.fields_by_name["containers"].number


def container_entry(c: Container) -> bytes:
    """The List view as an entry of ListContainersResponse.containers, encoded once per state."""
    return _list_view(c)[3]


def container_pb(c: Container) -> pb.Container:
    """The List view of a container, built once per state (read-only: List copies it)."""
    return _list_view(c)[2]


def _list_view(c: Container) -> tuple[object, str, pb.Container, bytes]:
    """(metadata, state, List view, its encoded entry), rebuilt when either of the first two changes."""
    v = c.view
    if v is not None and v[0] is c.meta and v[1] == c.status.state:
        return v
    cfg = c.config
    msg = pb.Container(
        id=c.meta.id, pod_sandbox_id=c.meta.pod_id, metadata=cfg.metadata,
        image=pb.ImageSpec(image=c.meta.image_id, user_specified_image=c.meta.image_ref),
        image_ref=c.meta.image_repo_ref or c.meta.image_id, state=STATE_TO_PB[c.status.state],
        created_at=c.meta.created_at, labels=cfg.labels, annotations=cfg.annotations,
        image_id=c.meta.image_id,
    )
    c.view = v = (c.meta, c.status.state, msg, field_entry(CONTAINERS_FIELD, msg))
    return v


def matches(c: Container, f: pb.ContainerFilter | None) -> bool:
    """ListContainers' filter: id and pod id by prefix, state, labels."""
    if f is None:
        return True
    if f.id and not c.meta.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not c.meta.pod_id.startswith(f.pod_sandbox_id):
        return False
    if f.HasField("state") and STATE_TO_PB[c.status.state] != f.state.state:
        return False
    return not f.label_selector or labels_match(c.config.labels, f.label_selector)


def container_status(c: Container, verbose: bool) -> tuple[pb.ContainerStatus, dict[str, str]]:
    """The Status view (read-only: callers copy it), built once per state: the kubelet asks for
    it again and again while nothing changes, and building it takes ~0.1 ms (copies of labels,
    annotations and mounts, the stop signal's name lookups)."""
    info = {"info": verbose_info(c)} if verbose else {}
    return _status_view(c)[2], info


def status_body(c: Container) -> bytes:
    """The Status view, encoded: built with it, once per state."""
    return _status_view(c)[3]


def _status_view(c: Container) -> View[pb.ContainerStatus]:
    """(metadata, the state's key, Status view, its encoding), rebuilt when either of the first
    two changes."""
    s = c.status
    key = (s.state, s.started_at, s.finished_at, s.exit_code, s.reason, s.message, s.resources)
    c.status_view = v = kept_view(c.status_view, c.meta, key, lambda: _build_status(c))
    return v


def verbose_info(c: Container) -> str:
    """The verbose status' info: the record's runtime facts and the OCI spec, whose JSON text
    goes in as it is (kept from CreateContainer, or read back and checked once after a restart)
    rather than decoded and encoded again on every call."""
    spec = c.spec_json
    if spec is None:
        spec = "null"
        with contextlib.suppress(OSError, ValueError):
            text = (Path(c.meta.bundle) / "config.json").read_text()
            json.loads(text)
            spec = c.spec_json = text
    head = json.dumps({
        "sandboxID": c.meta.pod_id, "pid": c.status.pid, "runtimeHandler": c.meta.handler,
        "bundle": c.meta.bundle, "cgroupsPath": c.meta.cgroups_path,
    })
    return f'{head[:-1]}, "runtimeSpec": {spec}}}'


def _build_status(c: Container) -> pb.ContainerStatus:
    """The template of what never changes, and the state over it."""
    st = pb.ContainerStatus()
    st.CopyFrom(status_template(c))
    s = c.status
    st.state = STATE_TO_PB[s.state]
    st.started_at = s.started_at
    st.finished_at = s.finished_at
    st.exit_code = s.exit_code
    st.reason = s.reason
    st.message = s.message
    if s.resources:  # as UpdateContainerResources last set them
        st.resources.linux.CopyFrom(pb.LinuxContainerResources.FromString(s.resources))
    return st


def status_template(c: Container) -> pb.ContainerStatus:
    """The part of the Status view that comes from the metadata and config alone. CreateContainer
    builds it, so that the first ContainerStatus (right after StartContainer) only copies it."""
    t = c.status_template
    if t is not None and t[0] is c.meta:
        return t[1]
    cfg = c.config
    st = pb.ContainerStatus(
        id=c.meta.id, metadata=cfg.metadata, created_at=c.meta.created_at,
        image=pb.ImageSpec(image=c.meta.image_ref, user_specified_image=c.meta.image_ref),
        image_ref=c.meta.image_repo_ref or c.meta.image_id, labels=cfg.labels,
        annotations=cfg.annotations, mounts=cfg.mounts, log_path=c.meta.log_path,
        image_id=c.meta.image_id, stop_signal=stop_signals.to_cri(c.meta.stop_signal),
    )
    st.resources.linux.CopyFrom(cfg.linux.resources)
    st.user.linux.uid = c.meta.uid
    st.user.linux.gid = c.meta.gid
    st.user.linux.supplemental_groups.extend(c.meta.supplemental_groups)
    c.status_template = (c.meta, st)
    return st
