"""Up-front validation of CRI requests, before anything is created.

Each RPC handler that creates or changes something calls one function here first. A bad
field becomes INVALID_ARGUMENT naming the object and the field as the request spells it:

    pod sandbox 'web' in namespace 'default': config.linux.sysctls['kernel.nope']: ...
    container 'app' in pod sandbox 3f2a...: config.linux.resources.cpu_shares: 4611686018427387904
        is outside 0 or 2..262144

Without this, such values reach runc or the kernel and come back as INTERNAL with a raw
runtime message, or worse are taken: a log file in /etc, a cgroup at the top of the tree.

The rules are pure except for facts of the host (which CPUs, memory nodes, huge page sizes
and sysctls exist), asked of a HostFacts that tests replace. What needs the pod's stored
state or the filesystem at creation time (a mount source that exists, a device node, a
sysctl namespaced for this pod) stays with the code that has it.
"""

from __future__ import annotations

from cri_shim.criapi import api_pb2 as pb
from cri_shim.errors import InvalidArgument
from cri_shim.validation.container import check_container_config
from cri_shim.validation.fields import FieldError, item, no_nul
from cri_shim.validation.host import FixedHost, HostFacts, LiveHost
from cri_shim.validation.pod import check_pod_config
from cri_shim.validation.resources import check_resources

__all__ = [
    "FixedHost", "HostFacts", "LiveHost", "create_container", "exec_sync", "run_pod_sandbox",
    "update_container_resources", "update_pod_sandbox_resources",
]


def _fail(subject: str, e: FieldError) -> InvalidArgument:
    return InvalidArgument(f"{subject}: {e.path}: {e.problem}")


def run_pod_sandbox(req: pb.RunPodSandboxRequest, cgroup_driver: str,
                    host: HostFacts | None = None) -> None:
    md = req.config.metadata
    subject = f"pod sandbox {md.name!r} in namespace {md.namespace!r}"
    try:
        check_pod_config("config", req.config, cgroup_driver, host or LiveHost())
    except FieldError as e:
        raise _fail(subject, e) from None


def create_container(req: pb.CreateContainerRequest, cgroup_driver: str,
                     host: HostFacts | None = None) -> None:
    host = host or LiveHost()
    subject = f"container {req.config.metadata.name!r} in pod sandbox {req.pod_sandbox_id!r}"
    try:
        check_container_config("config", req.config, host)
        if req.HasField("sandbox_config"):
            check_pod_config("sandbox_config", req.sandbox_config, cgroup_driver, host)
    except FieldError as e:
        raise _fail(subject, e) from None


def update_container_resources(req: pb.UpdateContainerResourcesRequest,
                               host: HostFacts | None = None) -> None:
    try:
        check_resources("linux", req.linux, host or LiveHost())
    except FieldError as e:
        raise _fail(f"container {req.container_id!r}", e) from None


def update_pod_sandbox_resources(req: pb.UpdatePodSandboxResourcesRequest,
                                 host: HostFacts | None = None) -> None:
    host = host or LiveHost()
    try:
        check_resources("resources", req.resources, host)
        check_resources("overhead", req.overhead, host, min_memory=0)
    except FieldError as e:
        raise _fail(f"pod sandbox {req.pod_sandbox_id!r}", e) from None


def exec_sync(req: pb.ExecSyncRequest) -> None:
    subject = f"exec in container {req.container_id!r}"
    try:
        if not req.cmd or not req.cmd[0]:
            raise FieldError("cmd", "the command is empty")
        for i, arg in enumerate(req.cmd):
            no_nul(item("cmd", i), arg)
        if req.timeout < 0:
            raise FieldError("timeout", f"{req.timeout} is negative (0 means no time-out)")
    except FieldError as e:
        raise _fail(subject, e) from None
