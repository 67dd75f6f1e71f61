"""Container Device Interface (CDI): devices named `vendor.example/class=name` in a container's
config become OCI spec edits read from CDI specification files.

Spec files (JSON or YAML, `*.json`, `*.yaml`, `*.yml`) live in the configured directories,
`/etc/cdi` then `/var/run/cdi` by default; a later directory overrides an earlier one for the
same device, and two files of one directory defining the same device make its name
ambiguous. A spec's own `containerEdits` apply once to a container using any of its devices,
each device's after them: `env`, `deviceNodes` (type, major and minor read from the host node
when the file leaves them out), `mounts`, `hooks` and `additionalGIDs`. Files are re-read
when they change (by size and mtime), so a new vendor file needs no restart.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cri_shim.containers.host_devices import host_device
from cri_shim.errors import InvalidArgument
from oci.builder import SpecBuilder

log = logging.getLogger(__name__)

DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
SUFFIXES = (".json", ".yaml", ".yml")
# vendor: a DNS name; class: letters, digits, - and _; name: letters, digits, -, _, . and :
_KIND = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?/[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
HOOK_NAMES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}


def split_name(qualified: str) -> tuple[str, str]:
    """"vendor.example/class=name" -> ("vendor.example/class", "name"), or InvalidArgument."""
    kind, sep, name = qualified.partition("=")
    if not sep or not _KIND.match(kind) or not _NAME.match(name):
        raise InvalidArgument(f"CDI device {qualified!r} is not a qualified name vendor.example/class=name")
    return kind, name


@dataclass(frozen=True)
class Device:
    qualified: str
    edits: dict[str, Any]  # the device's containerEdits
    spec_edits: dict[str, Any]  # its spec's containerEdits
    source: str  # the file


@dataclass
class Registry:
    devices: dict[str, Device] = field(default_factory=dict)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # name -> files
    problems: list[str] = field(default_factory=list)  # files that could not be read

    def resolve(self, qualified: str) -> Device:
        split_name(qualified)
        if qualified in self.ambiguous:
            raise InvalidArgument(f"CDI device {qualified!r} is ambiguous: defined in "
                                  f"{', '.join(self.ambiguous[qualified])}")
        device = self.devices.get(qualified)
        if device is None:
            hint = f" (unreadable spec files: {'; '.join(self.problems)})" if self.problems else ""
            raise InvalidArgument(f"CDI device {qualified!r} is not defined by any CDI spec{hint}")
        return device


_cache: dict[str, tuple[tuple[int, int], dict[str, Any] | str]] = {}


def _parse(path: Path) -> dict[str, Any] | str:
    """The spec in path, or what is wrong with it (re-read only when size or mtime change)."""
    try:
        st = path.stat()
    except OSError as e:
        return f"{path}: {e.strerror}"
    key = (st.st_size, st.st_mtime_ns)
    cached = _cache.get(str(path))
    if cached and cached[0] == key:
        return cached[1]
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        result: dict[str, Any] | str = _check_spec(data, path)
    except (OSError, ValueError, yaml.YAMLError) as e:
        result = f"{path}: {e}"
    _cache[str(path)] = (key, result)
    return result


def _check_spec(data: Any, path: Path) -> dict[str, Any] | str:
    if not isinstance(data, dict):
        return f"{path}: not a CDI spec (an object with cdiVersion, kind, devices)"
    kind = data.get("kind")
    if not isinstance(data.get("cdiVersion"), str) or not isinstance(kind, str) or not _KIND.match(kind):
        return f"{path}: missing or bad cdiVersion/kind"
    devices = data.get("devices")
    if not isinstance(devices, list) or not all(isinstance(d, dict) and isinstance(d.get("name"), str)
                                                and _NAME.match(d["name"]) for d in devices):
        return f"{path}: devices must be a list of objects with a name"
    return data


def load(dirs: list[str] | tuple[str, ...]) -> Registry:
    reg = Registry()
    for directory in dirs:
        try:
            files = sorted(p for p in Path(directory).iterdir() if p.suffix in SUFFIXES and p.is_file())
        except FileNotFoundError:
            continue
        except OSError as e:
            reg.problems.append(f"{directory}: {e.strerror}")
            continue
        in_this_dir: dict[str, str] = {}
        for path in files:
            spec = _parse(path)
            if isinstance(spec, str):
                log.warning("CDI: %s", spec)
                reg.problems.append(spec)
                continue
            for d in spec["devices"]:
                qualified = f"{spec['kind']}={d['name']}"
                if qualified in in_this_dir:
                    reg.ambiguous.setdefault(qualified, [in_this_dir[qualified]]).append(str(path))
                    continue
                in_this_dir[qualified] = str(path)
                reg.ambiguous.pop(qualified, None)  # a later directory settles it
                reg.devices[qualified] = Device(qualified, d.get("containerEdits") or {},
                                                spec.get("containerEdits") or {}, str(path))
    return reg


def apply(b: SpecBuilder, names: list[str], registry: Registry) -> None:
    """Apply the edits of each named device (and, once, of its spec) to the spec."""
    devices = [registry.resolve(n) for n in names]
    applied_specs: set[str] = set()
    for dev in devices:
        if dev.source not in applied_specs:
            applied_specs.add(dev.source)
            _edit(b, dev.spec_edits, dev.qualified)
        _edit(b, dev.edits, dev.qualified)


def _edit(b: SpecBuilder, edits: dict[str, Any], who: str) -> None:
    if not isinstance(edits, dict):
        raise InvalidArgument(f"CDI device {who!r}: containerEdits must be an object")
    env = edits.get("env") or []
    if env:
        if not all(isinstance(e, str) and "=" in e for e in env):
            raise InvalidArgument(f"CDI device {who!r}: env entries must be KEY=VALUE")
        b.env(env)
    for node in edits.get("deviceNodes") or []:
        _device_node(b, node, who)
    for m in edits.get("mounts") or []:
        if not isinstance(m, dict) or not m.get("hostPath") or not m.get("containerPath"):
            raise InvalidArgument(f"CDI device {who!r}: a mount needs hostPath and containerPath")
        options = list(m.get("options") or ["rbind", "rprivate"])
        b.add_mount(m["containerPath"], m.get("type") or "bind", m["hostPath"], options)
    for hook in edits.get("hooks") or []:
        if not isinstance(hook, dict) or hook.get("hookName") not in HOOK_NAMES or not hook.get("path"):
            raise InvalidArgument(f"CDI device {who!r}: a hook needs a path and a hookName "
                                  f"({', '.join(sorted(HOOK_NAMES))})")
        b.hook(hook["hookName"], hook["path"], hook.get("args"), hook.get("env"), hook.get("timeout"))
    gids = edits.get("additionalGIDs") or []
    if gids:
        user = b.spec.process.user if b.spec.process else None
        if user is not None:
            user.additional_gids = sorted({*(user.additional_gids or []), *(int(g) for g in gids)})


def _device_node(b: SpecBuilder, node: Any, who: str) -> None:
    path = node.get("path") if isinstance(node, dict) else None
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(f"CDI device {who!r}: a device node needs an absolute path")
    host = node.get("hostPath") or path
    kind, major, minor = node.get("type"), node.get("major"), node.get("minor")
    mode = node.get("fileMode")
    if kind is None or major is None or minor is None or mode is None:
        found, found_major, found_minor, found_mode = host_device(
            host, f"CDI device {who!r}: device node {host}")
        kind = kind or found
        major = found_major if major is None else major
        minor = found_minor if minor is None else minor
        mode = found_mode if mode is None else mode
    perms = node.get("permissions") or "rwm"
    if not perms or set(perms) - set("rwm"):
        raise InvalidArgument(f"CDI device {who!r}: permissions {perms!r} are not within rwm")
    b.add_device(path, kind, int(major), int(minor), file_mode=int(mode), uid=int(node.get("uid") or 0),
                 gid=int(node.get("gid") or 0), access=perms)
