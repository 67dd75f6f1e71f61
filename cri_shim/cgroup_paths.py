"""Where cri-shim's own processes go in the cgroup tree: pure naming, no I/O.

Paths are cgroupfs paths relative to a hierarchy's root ("/kubepods/besteffort/pod1/<id>").
The kubelet names the pod's cgroup parent; below it, like the other runtimes:

- the pod's infra process gets a cgroup named after the sandbox id: cgroupfs
  `<parent>/<sandbox id>` (containerd's pause container), systemd `<parent>/cri-shim-<id>.scope`
  (containerd's `cri-containerd-<id>.scope`, CRI-O's `crio-<id>.scope`);
- conmon gets `cri-shim-conmon-<container id>` (`.scope` under systemd), CRI-O's
  `crio-conmon-<id>`, under the pod's parent or under a configured runtime cgroup;
- a container gets cgroupfs `<parent>/<container id>`, or under systemd the runtime-spec
  cgroupsPath `<slice>:cri-shim:<container id>` (runc's `slice:prefix:name`), which the
  runtime, given --systemd-cgroup, asks systemd for as `<slice>/cri-shim-<id>.scope`.

With the systemd driver the parent is a slice name that systemd maps to nested
directories; we compute that mapping ourselves and write cgroupfs directly.
"""

from __future__ import annotations

from cri_shim.errors import InvalidArgument

DRIVERS = ("cgroupfs", "systemd")
SCOPE_PREFIX = "cri-shim"
CONMON_PREFIX = "cri-shim-conmon-"
# conmon_cgroup value that puts conmon under the pod's cgroup parent.
CONMON_IN_POD = "pod"
SLICE = ".slice"
# A container's slice under systemd when the kubelet names none (containerd's choice).
DEFAULT_SLICE = "system.slice"


class CgroupPathError(InvalidArgument):
    """A cgroup parent or setting that cannot name a cgroup (INVALID_ARGUMENT over CRI)."""


def expand_slice(name: str) -> str:
    """systemd slice name -> its cgroupfs path, e.g. a-b.slice -> /a.slice/a-b.slice.

    The rules are systemd's (and runc's ExpandSlice): each dash opens a nested slice,
    "-.slice" is the root, and empty components ("a--b.slice", "-a.slice") are invalid.
    """
    if not name.endswith(SLICE) or name == SLICE or "/" in name:
        raise CgroupPathError(f"invalid systemd slice name {name!r}")
    stem = name[: -len(SLICE)]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            raise CgroupPathError(f"invalid systemd slice name {name!r}")
        path += f"/{prefix}{part}{SLICE}"
        prefix += part + "-"
    return path


def _check_driver(driver: str) -> None:
    if driver not in DRIVERS:
        raise CgroupPathError(f"unknown cgroup driver {driver!r}")


def _check_id(what: str, value: str) -> None:
    # Ids become path components: refuse anything that could climb or nest.
    if not value or "/" in value or value in (".", ".."):
        raise CgroupPathError(f"invalid {what} {value!r} for a cgroup name")


def pod_parent(driver: str, cgroup_parent: str, pod_id: str) -> str:
    """The pod's cgroup parent as a cgroupfs path.

    Empty means the kubelet gave none: containers then live under /cri-shim/<pod id>
    (spec_gen's rule), whatever the driver. With the systemd driver the kubelet sends a
    slice name; with cgroupfs a path, relative or not, meant from the hierarchy root.
    """
    _check_driver(driver)
    _check_id("pod id", pod_id)
    if not cgroup_parent:
        return f"/cri-shim/{pod_id}"
    if driver == "systemd":
        return expand_slice(cgroup_parent)
    parts = [p for p in cgroup_parent.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise CgroupPathError(f"cgroup parent {cgroup_parent!r} must not contain . or ..")
    return "/" + "/".join(parts)


def _join(parent: str, leaf: str) -> str:
    return parent.rstrip("/") + "/" + leaf


def sandbox_cgroup(driver: str, cgroup_parent: str, pod_id: str) -> str:
    """The cgroup of the pod's infra process, named after the sandbox id."""
    leaf = f"{SCOPE_PREFIX}-{pod_id}.scope" if driver == "systemd" else pod_id
    return _join(pod_parent(driver, cgroup_parent, pod_id), leaf)


def check_conmon_setting(value: str, driver: str) -> None:
    """conmon_cgroup is "pod", an absolute cgroupfs path (cgroupfs driver) or a slice (systemd)."""
    _check_driver(driver)
    if value == CONMON_IN_POD:
        return
    if driver == "systemd":
        if not value.endswith(SLICE):
            raise CgroupPathError(
                f'conmon_cgroup {value!r}: with the systemd driver use "pod" or a slice such as '
                '"system.slice"')
        expand_slice(value)
        return
    parts = value.split("/")
    if not value.startswith("/") or value == "/" or any(p in (".", "..") for p in parts):
        raise CgroupPathError(
            f'conmon_cgroup {value!r}: with the cgroupfs driver use "pod" or an absolute cgroup path '
            'such as "/cri-shim-runtime"')


def conmon_cgroup(driver: str, setting: str, cgroup_parent: str, pod_id: str, container_id: str) -> str:
    """The cgroup conmon of one container is moved into."""
    check_conmon_setting(setting, driver)
    _check_id("container id", container_id)
    leaf = f"{CONMON_PREFIX}{container_id}" + (".scope" if driver == "systemd" else "")
    if setting == CONMON_IN_POD:
        parent = pod_parent(driver, cgroup_parent, pod_id)
    elif driver == "systemd":
        parent = expand_slice(setting)
    else:
        parent = "/" + "/".join(p for p in setting.split("/") if p)
    return _join(parent, leaf)


def container_cgroups_path(driver: str, cgroup_parent: str, pod_id: str, container_id: str) -> str:
    """The cgroupsPath of a container's runtime spec.

    cgroupfs: `<parent>/<container id>` with the parent as the kubelet sent it, and
    `/cri-shim/<pod id>` without one. systemd: `<slice>:cri-shim:<container id>`; a scope
    can only live in a slice, so without a parent that is system.slice.
    """
    _check_driver(driver)
    _check_id("container id", container_id)
    if driver == "systemd":
        slice_name = cgroup_parent or DEFAULT_SLICE
        expand_slice(slice_name)  # refuses what is not a slice
        return f"{slice_name}:{SCOPE_PREFIX}:{container_id}"
    parent = cgroup_parent or f"/cri-shim/{pod_id}"
    return f"{parent.rstrip('/')}/{container_id}"


def container_cgroup(driver: str, cgroups_path: str) -> str:
    """The cgroupfs path of the cgroup a container's cgroupsPath names, where its usage is read."""
    _check_driver(driver)
    if driver != "systemd" or not cgroups_path:
        return cgroups_path
    slice_name, prefix, name = cgroups_path.split(":")
    return _join(expand_slice(slice_name), f"{prefix}-{name}.scope")
