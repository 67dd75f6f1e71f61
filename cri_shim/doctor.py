"""`cri-shim doctor`: checks a host can run cri-shim, and says what is missing and how to fix it.

Each check turns facts read from the host into findings (ok, warn, fail). The readers are
small functions over /proc, /sys and the configured binaries; the judgements are pure and
tested with made-up facts. A "fail" is a blocking problem (pods or containers cannot start):
the command exits 1 when there is one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cri_shim.config import Config
from cri_shim.network.cni_config import NoNetworkConfig, load_default_network
from cri_shim.runtime_handlers import resolve_binary

OK, WARN, FAIL = "ok", "warn", "FAIL"
CAP_SYS_RESOURCE = 24
# what containers' resources need from cgroup v1; v2 names them in cgroup.controllers
V1_NEEDED = ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer")
V2_NEEDED = ("cpu", "cpuset", "memory", "pids")
V1_CONTROLLERS = frozenset({"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
                            "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma"})
FREE_FAIL = 1 << 30
FREE_WARN = 5 << 30


@dataclass(frozen=True)
class Finding:
    status: str
    topic: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{self.status:<4}  {self.topic}: {self.message}"
        return line + (f"\n      fix: {self.fix}" if self.fix else "")


# --- judgements over facts ----------------------------------------------------------------

def cgroup_mode(root_fstype: str, mounts: list[tuple[str, str, str]]) -> str:
    """"v2", "hybrid" or "v1" from /sys/fs/cgroup's type and the mounts (point, fstype, options)."""
    if root_fstype == "cgroup2fs":
        return "v2"
    has_unified = any(fstype == "cgroup2" for _, fstype, _ in mounts)
    return "hybrid" if has_unified else "v1"


def check_cgroups(mode: str, v1_controllers: set[str], v2_controllers: set[str],
                  unified_subtree: set[str], handlers: list[str]) -> Iterator[Finding]:
    if mode == "v2":
        missing = [c for c in V2_NEEDED if c not in v2_controllers]
        available = ", ".join(sorted(v2_controllers)) or "none"
        if missing:
            yield Finding(FAIL, "cgroups", f"cgroup v2 without the {', '.join(missing)} controller(s) "
                                           f"(available: {available})",
                          "enable them in the root's cgroup.subtree_control, or boot with them not "
                          "disabled (cgroup_disable=)")
        else:
            yield Finding(OK, "cgroups", f"cgroup v2 (unified), controllers {available}")
        return
    missing = [c for c in V1_NEEDED if c not in v1_controllers]
    if missing:
        yield Finding(FAIL, "cgroups", f"cgroup {mode} without the v1 controller(s) {', '.join(missing)}",
                      "mount them under /sys/fs/cgroup (cgroupfs-mount does it)")
    else:
        yield Finding(OK, "cgroups", f"cgroup {mode}: v1 controllers {', '.join(sorted(v1_controllers))}")
    if mode == "hybrid" and "crun" in handlers and unified_subtree:
        yield Finding(WARN, "crun", f"crun refuses a hybrid host whose cgroup2 root delegates controllers "
                                    f"({', '.join(sorted(unified_subtree))})",
                      "move them to v1: e.g. for hugetlb, `echo -hugetlb > "
                      "/sys/fs/cgroup/unified/cgroup.subtree_control` and mount it on its own v1 hierarchy")


def check_overlay(filesystems: str, snapshotter: str) -> Finding:
    names = {line.split()[-1] for line in filesystems.splitlines() if line.strip()}
    if "overlay" in names:
        return Finding(OK, "overlayfs", "the kernel has overlay")
    status = FAIL if snapshotter == "overlayfs" else WARN
    return Finding(status, "overlayfs", "the kernel has no overlay file system",
                   "`modprobe overlay`, or set images.snapshotter = \"native\" (copies layers per container)")


def check_idmap(kernel_release: str) -> Finding:
    parts = kernel_release.split(".")
    try:
        version = (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))
    except (IndexError, ValueError):
        return Finding(WARN, "idmapped mounts", f"cannot read the kernel version {kernel_release!r}")
    if version >= (5, 19):
        return Finding(OK, "idmapped mounts", f"kernel {kernel_release} idmaps overlay and bind mounts")
    if version >= (5, 12):
        return Finding(WARN, "idmapped mounts", f"kernel {kernel_release} idmaps bind mounts, not overlay",
                       "user-namespaced pods need 5.19 or newer")
    return Finding(WARN, "idmapped mounts", f"kernel {kernel_release} has none: no user-namespaced pods",
                   "a 5.19 or newer kernel")


def check_sys_resource(cap_eff_hex: str) -> Finding:
    if int(cap_eff_hex, 16) >> CAP_SYS_RESOURCE & 1:
        return Finding(OK, "capabilities", "CAP_SYS_RESOURCE held (oom_score_adj below 0 is allowed)")
    return Finding(WARN, "capabilities", "no CAP_SYS_RESOURCE: containers get oom_score_adj >= the "
                                         "daemon's, and a negative one the kubelet asks for is raised to it",
                   "run cri-shim with CAP_SYS_RESOURCE (as root outside a restricted container)")


def check_free_space(path: str, free: int) -> Finding:
    gib = free / (1 << 30)
    if free < FREE_FAIL:
        return Finding(FAIL, "disk", f"{gib:.1f} GiB free under {path}", "free space or move root_dir")
    if free < FREE_WARN:
        return Finding(WARN, "disk", f"{gib:.1f} GiB free under {path}: images need room")
    return Finding(OK, "disk", f"{gib:.0f} GiB free under {path}")


def check_socket(path: str, exists: bool, mode: int, uid: int) -> Finding:
    if not exists:
        return Finding(OK, "socket", f"{path}: no daemon is serving (it is created 0660 at start)")
    if mode & 0o007:
        return Finding(FAIL, "socket", f"{path} is mode {mode:o}: anyone may drive the runtime",
                       f"chmod 0660 {path} (restart cri-shim: it sets this itself)")
    if uid != 0:
        return Finding(WARN, "socket", f"{path} belongs to uid {uid}, not root")
    return Finding(OK, "socket", f"{path} is mode {mode:o}, owned by root")


def check_cgroup_driver(handler: str, driver: str, features: dict | None, status: str) -> Finding | None:
    """With cgroup_driver = "systemd" every runtime gets --systemd-cgroup: one whose `features`
    say it has no systemd driver (pyrunc) refuses to create containers."""
    cgroup = ((features or {}).get("linux") or {}).get("cgroup") or {}
    if driver != "systemd" or cgroup.get("systemd") is not False:
        return None
    return Finding(status, f"handler {handler}", 'has no systemd cgroup driver (its `features`), and '
                                                 'cgroup_driver is "systemd": it cannot create containers',
                   'set cgroup_driver = "cgroupfs" (and the kubelet\'s cgroupDriver: cgroupfs), or use '
                   "another runtime for this handler")


# --- readers ---------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _mounts() -> list[tuple[str, str, str]]:
    out = []
    for line in _read("/proc/self/mounts").splitlines():
        f = line.split()
        if len(f) >= 4:
            out.append((f[1], f[2], f[3]))
    return out


def _fstype(path: str) -> str:
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip()


def _version(binary: str) -> str:
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"does not run: {e}"
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else f"--version exited {r.returncode}"


def _features(binary: str) -> tuple[str, dict | None]:
    """What `features` says, in words and (when it is JSON) parsed."""
    try:
        r = subprocess.run([binary, "features"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "no `features`", None
    if r.returncode != 0:
        return "no `features` command", None
    try:
        parsed = json.loads(r.stdout)
    except ValueError:
        parsed = None
    return "features listed", parsed if isinstance(parsed, dict) else None


def host_findings(cfg: Config) -> list[Finding]:
    findings: list[Finding] = []
    mounts = _mounts()
    mode = cgroup_mode(_fstype("/sys/fs/cgroup"), mounts)
    v1 = {opt for point, fstype, opts in mounts if fstype == "cgroup" for opt in opts.split(",")
          if opt in V1_CONTROLLERS}
    v2_root = "/sys/fs/cgroup" if mode == "v2" else "/sys/fs/cgroup/unified"
    v2 = set(_read(f"{v2_root}/cgroup.controllers").split())
    subtree = set(_read(f"{v2_root}/cgroup.subtree_control").split()) if mode == "hybrid" else set()
    findings += check_cgroups(mode, v1, v2, subtree, list(cfg.runtimes))
    findings.append(check_overlay(_read("/proc/filesystems"), cfg.images.snapshotter))
    findings.append(check_idmap(os.uname().release))
    cap = next((line.split()[1] for line in _read("/proc/self/status").splitlines()
                if line.startswith("CapEff:")), "0")
    findings.append(check_sys_resource(cap))
    for name, rt in cfg.runtimes.items():
        path = resolve_binary(rt.binary)
        blocking = FAIL if name == cfg.default_runtime else WARN
        if path is None:
            findings.append(Finding(blocking, f"handler {name}", f"binary {rt.binary!r} not found",
                                    f"install it (Debian: apt-get install {rt.binary}) "
                                    f"or fix [runtimes.{name}]"))
        else:
            said, features = _features(path)
            findings.append(Finding(OK, f"handler {name}", f"{path}: {_version(path)}; {said}"))
            driver = check_cgroup_driver(name, cfg.cgroup_driver, features, blocking)
            if driver is not None:
                findings.append(driver)
    helpers = (("monitor", cfg.conmon, "conmon"), ("pod init", cfg.pause_init, "catatonit"))
    for what, binary, package in helpers:
        path = resolve_binary(binary)
        if path is None:
            findings.append(Finding(FAIL, what, f"{binary!r} not found", f"apt-get install {package}"))
        else:
            findings.append(Finding(OK, what, f"{path}: {_version(path)}"))
    try:
        net = load_default_network(cfg.cni.conf_dir, cfg.cni.bin_dirs)
        findings.append(Finding(OK, "CNI", f"network {net.name!r} from {cfg.cni.conf_dir}, plugins "
                                           f"{', '.join(p['type'] for p in net.plugins)} found"))
    except (NoNetworkConfig, OSError, ValueError) as e:
        findings.append(Finding(WARN, "CNI", f"{e}: pods on the pod network cannot start (host-network "
                                             f"pods can)",
                                "install containernetworking-plugins and a config (hack/setup-host.sh "
                                "writes /etc/cni/net.d/10-cri-shim.conflist)"))
    try:
        st = os.stat(cfg.socket)
        findings.append(check_socket(cfg.socket, True, st.st_mode & 0o777, st.st_uid))
    except FileNotFoundError:
        findings.append(check_socket(cfg.socket, False, 0, 0))
    root = Path(cfg.root_dir)
    existing = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    findings.append(check_free_space(str(existing), shutil.disk_usage(existing).free))
    return findings
