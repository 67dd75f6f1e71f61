"""Running CNI plugins for a pod: ADD, DEL and CHECK over a network configuration list.

The protocol part (environment, stdin documents, results and errors) is pure and
tested without plugins; `CNINetwork` is the thin asyncio wrapper that executes them.
The final ADD result is cached on disk so DEL works after a restart, as libcni does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri_shim.atomic_file import PRIVATE_FILE, write_state
from cri_shim.network.cni_config import NetworkConfig, find_plugin

PLUGIN_TIMEOUT = 60.0
IFNAME = "eth0"


class CNIError(Exception):
    """A plugin failed; carries the plugin's own code and message."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        text = f"CNI plugin {plugin} {command} failed (code {code}): {msg}"
        if details:
            text += f": {details}"
        super().__init__(text)
        self.plugin = plugin
        self.code = code


@dataclass
class PodNetworkRequest:
    pod_id: str
    netns: str
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    # [{"hostPort":..,"containerPort":..,"protocol":"tcp","hostIP":..}]
    port_mappings: list[dict[str, Any]] = field(default_factory=list)
    ifname: str = IFNAME


def plugin_env(command: str, req: PodNetworkRequest, bin_dirs: list[str]) -> dict[str, str]:
    args = ";".join([
        "IgnoreUnknown=1",
        f"K8S_POD_NAMESPACE={req.pod_namespace}",
        f"K8S_POD_NAME={req.pod_name}",
        f"K8S_POD_INFRA_CONTAINER_ID={req.pod_id}",
        f"K8S_POD_UID={req.pod_uid}",
    ])
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": req.pod_id,
        "CNI_NETNS": req.netns,
        "CNI_IFNAME": req.ifname,
        "CNI_PATH": ":".join(bin_dirs),
        "CNI_ARGS": args,
    }


def plugin_stdin(net: NetworkConfig, plugin: dict[str, Any], req: PodNetworkRequest,
                 prev_result: dict[str, Any] | None) -> bytes:
    """The network configuration a plugin reads: its own section plus name, version, prevResult.

    runtimeConfig carries only the capabilities the plugin declares (the spec's rule).
    """
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    caps = plugin.get("capabilities") or {}
    runtime: dict[str, Any] = {}
    if caps.get("portMappings") and req.port_mappings:
        runtime["portMappings"] = req.port_mappings
    if runtime:
        conf["runtimeConfig"] = runtime
    else:
        conf.pop("runtimeConfig", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return json.dumps(conf).encode()


def parse_output(plugin: str, command: str, returncode: int, stdout: bytes, stderr: bytes) -> dict[str, Any]:
    """A plugin's result, or CNIError with its code/msg (or stderr when it printed no JSON)."""
    doc: Any = None
    if stdout.strip():
        try:
            doc = json.loads(stdout)
        except ValueError:
            doc = None
    if returncode != 0:
        if isinstance(doc, dict) and "msg" in doc:
            raise CNIError(plugin, command, int(doc.get("code", 999)), str(doc["msg"]),
                           str(doc.get("details", "")))
        text = (stderr or stdout).decode(errors="replace").strip()[-1000:]
        raise CNIError(plugin, command, 999, text or f"exit status {returncode}")
    if command != "ADD":
        return {}
    if not isinstance(doc, dict):
        raise CNIError(plugin, command, 999, f"unparseable result: {stdout[:200]!r}")
    return doc


@dataclass
class PodIPs:
    ips: list[str]

    @property
    def primary(self) -> str:
        return self.ips[0] if self.ips else ""


def pod_ips(result: dict[str, Any], ifname: str = IFNAME) -> PodIPs:
    """Addresses of the pod's interface, IPv4 first (the kubelet's primary pod IP)."""
    interfaces = result.get("interfaces") or []
    out: list[str] = []
    for ip in result.get("ips") or []:
        idx = ip.get("interface")
        if idx is not None and 0 <= idx < len(interfaces):
            iface = interfaces[idx]
            if not iface.get("sandbox") or iface.get("name") != ifname:
                continue
        addr = str(ip.get("address", "")).split("/")[0]
        if addr and addr not in out:
            out.append(addr)
    out.sort(key=lambda a: ":" in a)
    return PodIPs(out)


class CNINetwork:
    def __init__(self, net: NetworkConfig, bin_dirs: list[str], cache_dir: Path) -> None:
        self.net = net
        self.bin_dirs = bin_dirs
        self.cache_dir = cache_dir

    def _cache_path(self, req: PodNetworkRequest) -> Path:
        return self.cache_dir / "results" / f"{self.net.name}-{req.pod_id}-{req.ifname}"

    async def _run(self, plugin: dict[str, Any], command: str, req: PodNetworkRequest,
                   prev: dict[str, Any] | None, net: NetworkConfig | None = None) -> dict[str, Any]:
        net = net or self.net
        kind = plugin["type"]
        path = find_plugin(kind, self.bin_dirs)
        if path is None:
            raise CNIError(kind, command, 999, f"plugin not found in {':'.join(self.bin_dirs)}")
        try:
            proc = await asyncio.create_subprocess_exec(
                str(path), env=plugin_env(command, req, self.bin_dirs),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except (OSError, ValueError) as e:  # not executable; a NUL byte in the environment
            raise CNIError(kind, command, 999, f"cannot run {path}: {e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(plugin_stdin(net, plugin, req, prev)),
                                              PLUGIN_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise CNIError(kind, command, 999, f"timed out after {PLUGIN_TIMEOUT:.0f}s") from None
        return parse_output(kind, command, proc.returncode or 0, out, err)

    async def add(self, req: PodNetworkRequest) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        try:
            for plugin in self.net.plugins:
                result = await self._run(plugin, "ADD", req, result)
        except BaseException:
            # Undo the plugins that did run; a half-plumbed pod must not keep its IP.
            with contextlib.suppress(Exception):
                await self._del_with(self.net, req, result)
            raise
        assert result is not None
        await asyncio.to_thread(write_state, self._cache_path(req), json.dumps({
            "config": self.net.raw, "result": result, "portMappings": req.port_mappings,
        }).encode(), PRIVATE_FILE)
        return result

    async def delete(self, req: PodNetworkRequest) -> None:
        """Tear down; uses the cached config and result when there are some, succeeds without."""
        cache = self._cache_path(req)
        net, prev = self.net, None
        try:
            cached = json.loads(cache.read_bytes())
            raw = cached["config"]
            net = NetworkConfig(cache, raw["name"], str(raw.get("cniVersion", "")), raw["plugins"], raw)
            prev = cached.get("result")
            req.port_mappings = req.port_mappings or cached.get("portMappings") or []
        except (OSError, ValueError, KeyError):
            pass
        await self._del_with(net, req, prev)
        with contextlib.suppress(FileNotFoundError):
            cache.unlink()

    async def _del_with(
        self, net: NetworkConfig, req: PodNetworkRequest, prev: dict[str, Any] | None
    ) -> None:
        if req.netns and not os.path.exists(req.netns):
            req.netns = ""  # plugins release IPAM state without a namespace
        errors = []
        for plugin in reversed(net.plugins):
            try:
                await self._run(plugin, "DEL", req, prev, net)
            except CNIError as e:
                errors.append(str(e))
        if errors:
            raise CNIError(net.name, "DEL", 999, "; ".join(errors))

    async def check(self, req: PodNetworkRequest) -> None:
        cached = json.loads(self._cache_path(req).read_bytes())
        for plugin in self.net.plugins:
            await self._run(plugin, "CHECK", req, cached.get("result"))
