"""Daemon configuration: defaults, the TOML file, command-line overrides.

Precedence, lowest first: built-in defaults, the TOML file given with --config,
then flags. `cri-shim config` prints the effective result as TOML, so its output is
itself a valid config file.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cri_shim.cgroup_paths import check_conmon_setting
from cri_shim.errors import InvalidArgument

DEFAULT_STATE_DIR = "/run/cri-shim"
DEFAULT_ROOT_DIR = "/var/lib/cri-shim"
DEFAULT_SOCKET = "/run/cri-shim/cri-shim.sock"
CGROUP_DRIVERS = ("cgroupfs", "systemd")


@dataclass
class RuntimeHandlerConfig:
    """One CRI runtime handler: a binary speaking the runc command-line interface."""

    binary: str
    # --root for the runtime's own state; empty means <state_dir>/runtimes/<name>.
    root: str = ""
    # Kind of runtime; only "oci" (a runc-compatible CLI) exists today.
    type: str = "oci"
    # Extra global flags passed before the verb, e.g. ["--debug"].
    extra_args: list[str] = field(default_factory=list)
    # Handler-specific knobs, passed through to the adapter untouched.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CNIConfig:
    conf_dir: str = "/etc/cni/net.d"
    bin_dirs: list[str] = field(default_factory=lambda: ["/usr/lib/cni", "/opt/cni/bin"])
    # Where ADD results are cached so DEL works after a restart.
    cache_dir: str = ""


@dataclass
class ImageConfig:
    # Registries reachable over plain http (localhost/127.0.0.1 always are).
    insecure_registries: list[str] = field(default_factory=list)
    # registry host -> mirror endpoints tried in order before the registry itself.
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    # registry host -> the one endpoint that replaces the registry (containerd's hosts.toml
    # `server`): its mirrors are still tried first, the real host never is.
    servers: dict[str, str] = field(default_factory=dict)
    # A docker-style config.json with "auths"; empty means none.
    auth_file: str = ""
    max_concurrent_downloads: int = 3
    # Seconds without any byte received before a pull fails.
    pull_progress_timeout: float = 60.0
    # Seconds a whole pull may take.
    pull_deadline: float = 1800.0
    # Seconds between progress lines in the daemon log.
    pull_progress_interval: float = 5.0
    # "overlayfs", or "native": layers copied into each container's root (no overlay needed).
    snapshotter: str = "overlayfs"


@dataclass
class StreamingConfig:
    """The streaming server that Exec, Attach and PortForward URLs point at."""

    address: str = "127.0.0.1"
    # 0: a free port chosen at start, like containerd's default
    port: int = 0
    # Both set: the server speaks TLS with this certificate and key (PEM files).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Seconds a URL stays valid before its client connects (the kubelet's cache keeps 60).
    token_ttl: float = 60.0
    # Sessions served at once; more are answered 503.
    max_connections: int = 256


@dataclass
class MetricsConfig:
    # host:port of the Prometheus endpoint (GET /metrics); empty: off
    address: str = ""


@dataclass
class SeccompConfig:
    # Where the seccomp recorder writes the profiles its annotation names
    # (seccomp-recorder.cri-shim.io/profile: "of:NAME"); empty: <root_dir>/seccomp-recordings.
    recorder_dir: str = ""


@dataclass
class Config:
    socket: str = DEFAULT_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    root_dir: str = DEFAULT_ROOT_DIR
    log_level: str = "info"
    # What answers the CRI socket: "builtin" (cri_shim/server/grpc_server.py, the event loop's
    # own HTTP/2), or "grpcio" (grpc-python's server: slower per call, the fallback).
    grpc_server: str = "builtin"
    # "text", or "json": one object per line with the request's pod and container ids
    log_format: str = "text"
    cgroup_driver: str = "cgroupfs"
    conmon: str = "conmon"
    # CRIU, for CheckpointContainer (runc gets it with --criu, crun finds it first on PATH).
    criu: str = "criu"
    # Where each container's conmon is accounted: "pod" (a cgroup under the pod's cgroup
    # parent, like CRI-O's default), or a runtime cgroup: an absolute cgroupfs path with the
    # cgroupfs driver, a slice such as "system.slice" with systemd.
    conmon_cgroup: str = "pod"
    # The pod's infra process, run as `pause_init -P` in the pod's namespaces and cgroup;
    # PID 1 of the pod's PID namespace when it shares one.
    pause_init: str = "catatonit"
    default_runtime: str = "runc"
    # Where CDI specification files are read, in order (a later one overrides an earlier one).
    cdi_spec_dirs: list[str] = field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])
    runtimes: dict[str, RuntimeHandlerConfig] = field(default_factory=dict)
    cni: CNIConfig = field(default_factory=CNIConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    seccomp: SeccompConfig = field(default_factory=SeccompConfig)

    def __post_init__(self) -> None:
        if not self.runtimes:
            self.runtimes = default_runtimes()

    def runtime_root(self, handler: str) -> Path:
        rt = self.runtimes[handler]
        return Path(rt.root) if rt.root else Path(self.state_dir) / "runtimes" / handler

    def seccomp_recorder_dir(self) -> Path:
        d = self.seccomp.recorder_dir
        return Path(d) if d else Path(self.root_dir) / "seccomp-recordings"

    def cni_cache_dir(self) -> Path:
        return Path(self.cni.cache_dir) if self.cni.cache_dir else Path(self.state_dir) / "cni"

    def validate(self) -> None:
        if self.cgroup_driver not in CGROUP_DRIVERS:
            raise InvalidArgument(
                f"cgroup_driver {self.cgroup_driver!r} is not one of {', '.join(CGROUP_DRIVERS)}"
            )
        check_conmon_setting(self.conmon_cgroup, self.cgroup_driver)
        _check_streaming(self.streaming)
        if self.grpc_server not in ("builtin", "grpcio"):
            raise InvalidArgument(f"config: grpc_server {self.grpc_server!r} is not one of builtin, grpcio")
        if self.log_format not in ("text", "json"):
            raise InvalidArgument(f"config: log_format {self.log_format!r} is not one of text, json")
        if self.metrics.address:
            from cri_shim.metrics_endpoint import parse_address

            parse_address(self.metrics.address)
        if self.default_runtime not in self.runtimes:
            raise InvalidArgument(
                f"default_runtime {self.default_runtime!r} is not a configured handler "
                f"(known: {', '.join(sorted(self.runtimes))})"
            )
        for host, endpoint in self.images.servers.items():
            if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
                raise InvalidArgument(
                    f"images.servers[{host!r}] must be an http:// or https:// URL, got {endpoint!r}")
        for host, endpoints in self.images.mirrors.items():
            if not isinstance(endpoints, list) or not all(
                    isinstance(e, str) and e.startswith(("http://", "https://")) for e in endpoints):
                raise InvalidArgument(f"images.mirrors[{host!r}] must be a list of http:// or https:// URLs")
        if self.images.snapshotter not in ("overlayfs", "native"):
            raise InvalidArgument(
                f"images.snapshotter {self.images.snapshotter!r} is not one of overlayfs, native")
        for name, rt in self.runtimes.items():
            if rt.type != "oci":
                raise InvalidArgument(f"runtime handler {name!r}: unknown type {rt.type!r}")
            if not rt.binary:
                raise InvalidArgument(f"runtime handler {name!r}: binary is empty")
        for key in ("socket", "state_dir", "root_dir"):
            if not Path(getattr(self, key)).is_absolute():
                raise InvalidArgument(f"{key} must be an absolute path, got {getattr(self, key)!r}")
        if self.seccomp.recorder_dir and not Path(self.seccomp.recorder_dir).is_absolute():
            raise InvalidArgument(
                f"seccomp.recorder_dir must be an absolute path, got {self.seccomp.recorder_dir!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_runtimes() -> dict[str, RuntimeHandlerConfig]:
    return {
        "runc": RuntimeHandlerConfig(binary="runc"),
        "crun": RuntimeHandlerConfig(binary="crun"),
        "pyrunc": RuntimeHandlerConfig(binary="pyrunc"),
    }


def _check_streaming(st: StreamingConfig) -> None:
    if not isinstance(st.port, int) or not 0 <= st.port < 65536:
        raise InvalidArgument(f"config: streaming.port {st.port!r} is not a port (0: any free one)")
    if bool(st.tls_cert_file) != bool(st.tls_key_file):
        raise InvalidArgument("config: streaming.tls_cert_file and streaming.tls_key_file go together")
    if not st.token_ttl > 0:
        raise InvalidArgument(f"config: streaming.token_ttl {st.token_ttl!r} must be positive")
    if not isinstance(st.max_connections, int) or st.max_connections < 1:
        raise InvalidArgument(f"config: streaming.max_connections {st.max_connections!r} must be at least 1")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Construct dataclass `cls` from a TOML table, rejecting unknown keys by name."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise InvalidArgument(f"config: unknown key {where}{key!r}")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    data = dict(data)
    runtimes = data.pop("runtimes", None)
    cni = data.pop("cni", None)
    images = data.pop("images", None)
    streaming = data.pop("streaming", None)
    metrics = data.pop("metrics", None)
    seccomp = data.pop("seccomp", None)
    cfg: Config = _build(Config, data, "")
    if runtimes is not None:
        if not isinstance(runtimes, dict):
            raise InvalidArgument("config: [runtimes] must be a table of handlers")
        merged = default_runtimes()
        for name, table in runtimes.items():
            if not isinstance(table, dict):
                raise InvalidArgument(f"config: [runtimes.{name}] must be a table")
            merged[name] = _build(RuntimeHandlerConfig, table, f"runtimes.{name}.")
        cfg.runtimes = merged
    if cni is not None:
        cfg.cni = _build(CNIConfig, cni, "cni.")
    if images is not None:
        cfg.images = _build(ImageConfig, images, "images.")
    if streaming is not None:
        cfg.streaming = _build(StreamingConfig, streaming, "streaming.")
    if metrics is not None:
        cfg.metrics = _build(MetricsConfig, metrics, "metrics.")
    if seccomp is not None:
        cfg.seccomp = _build(SeccompConfig, seccomp, "seccomp.")
    return cfg


def load(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file at `path` (if any), then non-None `overrides`."""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InvalidArgument(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise InvalidArgument(f"config file {path} is not valid TOML: {e}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    cfg = from_dict(data)
    cfg.validate()
    return cfg


def to_toml(cfg: Config) -> str:
    """Render the configuration as TOML (only the types Config uses)."""
    out: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{key(k)} = {scalar(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot render {type(v).__name__} as TOML")

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else scalar(k)

    def table(name: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not (isinstance(v, dict) and k in SUBTABLES)}
        if name:
            out.append(f"\n[{name}]")
        for k, v in plain.items():
            out.append(f"{key(k)} = {scalar(v)}")

    SUBTABLES = {"runtimes", "cni", "images", "streaming", "metrics", "seccomp"}
    d = cfg.to_dict()
    table("", d)
    for name, rt in d["runtimes"].items():
        table(f"runtimes.{key(name)}", rt)
    table("cni", d["cni"])
    table("images", d["images"])
    table("streaming", d["streaming"])
    table("metrics", d["metrics"])
    table("seccomp", d["seccomp"])
    return "\n".join(out) + "\n"
