"""cgroupfs driver for v1 (one directory per hierarchy) and v2 (unified), like runc's fs manager.

Resource mapping is pure (`v1_settings`, `v2_settings` return file/value pairs) so the
translation is unit-testable; `apply` writes them.

It runs on `posix` and `fs`, never `os` (see fs.py).
"""

import posix
import time

from . import fs
from .errors import PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every short-lived command
    from typing import Any

ROOT = "/sys/fs/cgroup"
# v1 hierarchies runc creates a directory in; others (perf_event...) are joined when present
_V1_KNOWN = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
             "net_cls", "net_prio", "perf_event", "rdma", "misc", "name=systemd")


def is_unified() -> bool:
    """A cgroup2 file system at the root: only its root has cgroup.controllers (not statfs,
    which would load libc into `create` before its child exists to load it instead)."""
    return fs.exists(ROOT + "/cgroup.controllers")


def _v1_hierarchies() -> dict[str, str]:
    """mountpoint -> comma-joined controllers of each mounted v1 hierarchy (and 'unified')."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if len(fields) < 3:
                continue
            mnt = left.split()[4]
            if fields[0] == "cgroup":
                ctrls = [o for o in fields[2].split(",") if o in _V1_KNOWN or o.startswith("name=")]
                if ctrls and mnt not in out:
                    out[mnt] = ",".join(ctrls)
            elif fields[0] == "cgroup2" and mnt.startswith(ROOT + "/"):
                out[mnt] = ""  # hybrid: the unified tree beside the v1 ones
    return out


def _own_cgroups() -> dict[str, str]:
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            own[ctrls] = path
    return own


def resolve(cgroups_path: str, cid: str) -> "dict[str, Any]":
    """Directory of the container's cgroup in each hierarchy; absolute paths are relative to the
    hierarchy root, relative ones to pyrunc's own cgroup (runc's rules)."""
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        # systemd notation slice:prefix:name; we only have the cgroupfs driver, so map it plainly
        slice_, prefix, name = (cgroups_path.split(":") + ["", ""])[:3]
        cgroups_path = "/" + "/".join(p for p in (slice_, f"{prefix}-{name}" if prefix else name) if p)
    rel = cgroups_path or cid
    own = _own_cgroups()
    if is_unified():
        base = rel if rel.startswith("/") else fs.join(own.get("", "/"), rel)
        return {"mode": "v2", "paths": {"": fs.normpath(ROOT + "/" + base)}}
    paths: dict[str, str] = {}
    for mnt, ctrls in _v1_hierarchies().items():
        base = rel if rel.startswith("/") else fs.join(own.get(ctrls, "/"), rel)
        paths[ctrls or "unified"] = fs.normpath(mnt + "/" + base)
    return {"mode": "v1", "paths": paths}


def _write(path: str, value: str) -> None:
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
    except OSError as e:
        raise PyruncError(f"cgroup: open {path}: {e.strerror}") from None
    try:
        posix.write(fd, value.encode())
    except OSError as e:
        raise PyruncError(f"cgroup: write {value!r} to {path}: {e.strerror}") from None
    finally:
        posix.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _init_cpuset(path: str) -> None:
    """A new v1 cpuset cgroup has empty cpus/mems; copy them down from the nearest ancestor."""
    parent = fs.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(fs.join(parent, name)):
            _init_cpuset(parent)
        if not _read(fs.join(path, name)):
            _write(fs.join(path, name), _read(fs.join(parent, name)))


def _enable_v2_controllers(path: str) -> None:
    """Enable every available controller in each ancestor's subtree_control, root first."""
    rel = path[len(ROOT):].strip("/") if path.startswith(ROOT + "/") else ""
    cur = ROOT
    for part in rel.split("/") if rel else []:
        try:
            avail = _read(fs.join(cur, "cgroup.controllers")).split()
            want = " ".join("+" + c for c in avail)
            if want:
                try:
                    _write(fs.join(cur, "cgroup.subtree_control"), want)
                except PyruncError:
                    for c in avail:  # one may be refused (e.g. cpu with rt tasks); keep the rest
                        try:
                            _write(fs.join(cur, "cgroup.subtree_control"), "+" + c)
                        except PyruncError:
                            pass
        except OSError:
            pass
        cur = fs.join(cur, part)
        if not fs.isdir(cur):
            posix.mkdir(cur)


def create(cg: "dict[str, Any]") -> list[str]:
    """Make the directories; returns those newly created (removed again on failure)."""
    made: list[str] = []
    for ctrls, path in cg["paths"].items():
        if cg["mode"] == "v2":
            existed = fs.isdir(path)
            _enable_v2_controllers(path)
            if not existed:
                made.append(path)
            continue
        try:
            posix.mkdir(path, 0o755)  # the usual case: the parent is there, the cgroup is not
            made.append(path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            missing = []
            p = path
            while not fs.isdir(p):
                missing.append(p)
                p = fs.dirname(p)
            fs.makedirs(path, 0o755)
            made += missing
        if "cpuset" in ctrls.split(","):
            _init_cpuset(path)
    return made


def join(cg: "dict[str, Any]", pid: int) -> None:
    for path in cg["paths"].values():
        _write(fs.join(path, "cgroup.procs"), str(pid))


def join_self_v1(cg: "dict[str, Any]") -> None:
    """Move the calling single-threaded process into the container's v1 cgroups by writing 0
    (itself) to each `tasks` file. Moving one thread, the caller, skips the global lock that a
    write to cgroup.procs takes and the RCU grace period that lock waits for: 0.1 ms instead of
    8-20 ms here. A cgroup2 tree has no such file; `v2_path` is entered at fork instead."""
    if cg["mode"] != "v1":
        return
    for key, path in cg["paths"].items():
        if key != "unified":
            _write(fs.join(path, "tasks"), "0")


def v2_path(cg: "dict[str, Any]") -> str | None:
    """The container's cgroup2 directory: all of it on v2, the unified tree of a hybrid host."""
    return cg["paths"].get("" if cg["mode"] == "v2" else "unified")


def _shares_to_weight(shares: int) -> int:
    return 1 + ((shares - 2) * 9999) // 262142 if shares else 0


def _blkio_to_io_weight(w: int) -> int:
    return 1 + (w - 10) * 9999 // 990 if w else 0


def _dev(d: "dict[str, Any]") -> str:
    return f"{d['major']}:{d['minor']}"


def _limit(v: int | None) -> str:
    return "max" if v is None or v < 0 else str(v)


def device_rule(rule: "dict[str, Any]") -> str:
    typ = rule.get("type") or "a"
    major = rule.get("major")
    minor = rule.get("minor")
    maj = "*" if major is None or major < 0 else str(major)
    mi = "*" if minor is None or minor < 0 else str(minor)
    return f"{typ} {maj}:{mi} {rule.get('access') or 'rwm'}"


def v1_settings(res: "dict[str, Any]", current_memsw: int | None = None) -> list[tuple[str, str, str]]:
    """(controller, file, value) in the order they must be written."""
    out: list[tuple[str, str, str]] = []
    cpu = res.get("cpu") or {}
    if cpu.get("shares"):
        out.append(("cpu", "cpu.shares", str(cpu["shares"])))
    if cpu.get("period"):
        out.append(("cpu", "cpu.cfs_period_us", str(cpu["period"])))
    if cpu.get("quota") not in (None, 0):
        out.append(("cpu", "cpu.cfs_quota_us", str(cpu["quota"])))
    if cpu.get("realtimePeriod"):
        out.append(("cpu", "cpu.rt_period_us", str(cpu["realtimePeriod"])))
    if cpu.get("realtimeRuntime"):
        out.append(("cpu", "cpu.rt_runtime_us", str(cpu["realtimeRuntime"])))
    if cpu.get("cpus"):
        out.append(("cpuset", "cpuset.cpus", cpu["cpus"]))
    if cpu.get("mems"):
        out.append(("cpuset", "cpuset.mems", cpu["mems"]))
    mem = res.get("memory") or {}
    limit, swap = mem.get("limit"), mem.get("swap")
    if limit is not None and limit != 0:
        pair = [("memory", "memory.limit_in_bytes", str(limit))]
        if swap not in (None, 0):
            sw = ("memory", "memory.memsw.limit_in_bytes", str(swap))
            # memsw must stay >= limit at every step: raise it first when growing
            if swap == -1 or current_memsw is None or (current_memsw != -1 and limit > current_memsw):
                pair.insert(0, sw)
            else:
                pair.append(sw)
        elif limit == -1:
            pair.insert(0, ("memory", "memory.memsw.limit_in_bytes", "-1"))
        out += pair
    elif swap not in (None, 0):
        out.append(("memory", "memory.memsw.limit_in_bytes", str(swap)))
    if mem.get("reservation"):
        out.append(("memory", "memory.soft_limit_in_bytes", str(mem["reservation"])))
    if mem.get("kernel"):
        out.append(("memory", "memory.kmem.limit_in_bytes", str(mem["kernel"])))
    if mem.get("swappiness") is not None and 0 <= mem["swappiness"] <= 100:
        out.append(("memory", "memory.swappiness", str(mem["swappiness"])))
    if mem.get("disableOOMKiller"):
        out.append(("memory", "memory.oom_control", "1"))
    pids = res.get("pids") or {}
    if pids.get("limit") not in (None, 0):
        out.append(("pids", "pids.max", _limit(pids["limit"])))
    for h in res.get("hugepageLimits") or []:
        out.append(("hugetlb", f"hugetlb.{h['pageSize']}.limit_in_bytes", str(h["limit"])))
    bio = res.get("blockIO") or {}
    if bio.get("weight"):
        out.append(("blkio", "blkio.weight", str(bio["weight"])))
    if bio.get("leafWeight"):
        out.append(("blkio", "blkio.leaf_weight", str(bio["leafWeight"])))
    for d in bio.get("weightDevice") or []:
        if d.get("weight"):
            out.append(("blkio", "blkio.weight_device", f"{_dev(d)} {d['weight']}"))
        if d.get("leafWeight"):
            out.append(("blkio", "blkio.leaf_weight_device", f"{_dev(d)} {d['leafWeight']}"))
    for key, fname in (("throttleReadBpsDevice", "read_bps_device"),
                       ("throttleWriteBpsDevice", "write_bps_device"),
                       ("throttleReadIOPSDevice", "read_iops_device"),
                       ("throttleWriteIOPSDevice", "write_iops_device")):
        for d in bio.get(key) or []:
            out.append(("blkio", f"blkio.throttle.{fname}", f"{_dev(d)} {d['rate']}"))
    if res.get("devices"):
        # start from deny-all, then replay the rules in order, like runc's emulator does
        out.append(("devices", "devices.deny", "a *:* rwm"))
        for rule in res["devices"]:
            out.append(("devices", "devices.allow" if rule.get("allow") else "devices.deny",
                        device_rule(rule)))
    for k, v in (res.get("unified") or {}).items():
        out.append(("unified", k, v))
    return out


def v2_settings(res: "dict[str, Any]") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    cpu = res.get("cpu") or {}
    if cpu.get("shares"):
        out.append(("cpu.weight", str(_shares_to_weight(cpu["shares"]))))
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota not in (None, 0) or period:
        q = "max" if quota in (None, 0) or quota < 0 else str(quota)
        out.append(("cpu.max", f"{q} {period or 100000}"))
    if cpu.get("cpus"):
        out.append(("cpuset.cpus", cpu["cpus"]))
    if cpu.get("mems"):
        out.append(("cpuset.mems", cpu["mems"]))
    mem = res.get("memory") or {}
    limit, swap = mem.get("limit"), mem.get("swap")
    if swap not in (None, 0):
        if swap == -1:
            out.append(("memory.swap.max", "max"))
        elif limit in (None, 0, -1):
            raise PyruncError("cgroup v2: memory.swap is set but memory.limit is not")
        else:
            if swap < limit:
                raise PyruncError(f"memory+swap limit ({swap}) should be >= memory limit ({limit})")
            out.append(("memory.swap.max", str(swap - limit)))
    if limit not in (None, 0):
        out.append(("memory.max", _limit(limit)))
    if mem.get("reservation"):
        out.append(("memory.low", str(mem["reservation"])))
    pids = res.get("pids") or {}
    if pids.get("limit") not in (None, 0):
        out.append(("pids.max", _limit(pids["limit"])))
    for h in res.get("hugepageLimits") or []:
        out.append((f"hugetlb.{h['pageSize']}.max", str(h["limit"])))
    bio = res.get("blockIO") or {}
    if bio.get("weight"):
        out.append(("io.weight", f"default {_blkio_to_io_weight(bio['weight'])}"))
    for d in bio.get("weightDevice") or []:
        if d.get("weight"):
            out.append(("io.weight", f"{_dev(d)} {_blkio_to_io_weight(d['weight'])}"))
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for d in bio.get(key) or []:
            out.append(("io.max", f"{_dev(d)} {name}={d['rate']}"))
    for k, v in (res.get("unified") or {}).items():
        out.append((k, v))
    return out


def apply(cg: "dict[str, Any]", res: "dict[str, Any]") -> None:
    if not res:
        return
    paths = cg["paths"]
    if cg["mode"] == "v2":
        for fname, value in v2_settings(res):
            _write(fs.join(paths[""], fname), value)
        if res.get("devices"):
            # no devices.allow on v2: the kernel asks an eBPF program attached to the cgroup
            from . import cgroup_devices
            cgroup_devices.install(paths[""], res["devices"])
        return
    by_ctrl: dict[str, str] = {}
    for key, path in paths.items():
        for c in key.split(","):
            by_ctrl[c] = path
    memsw = None
    if "memory" in by_ctrl:
        try:
            memsw = int(_read(fs.join(by_ctrl["memory"], "memory.memsw.limit_in_bytes")))
        except (OSError, ValueError):
            memsw = None
    for ctrl, fname, value in v1_settings(res, memsw):
        base = by_ctrl.get(ctrl)
        if base is None:
            if ctrl in ("hugetlb", "blkio", "unified"):
                raise PyruncError(f"cgroup controller {ctrl} is not mounted")
            continue
        path = fs.join(base, fname)
        if fname.startswith("memory.memsw") and not fs.exists(path):
            mem = res.get("memory") or {}
            if mem.get("swap") not in (None, 0, -1) and mem.get("swap") != mem.get("limit"):
                raise PyruncError("memory swap limit requested but swap accounting is disabled")
            continue
        _write(path, value)


def procs(cg: "dict[str, Any]") -> list[int]:
    paths = cg.get("paths") or {}
    for key in ("", "pids", "memory", "freezer", "cpu"):
        for k, path in paths.items():
            if k == key or key in k.split(","):
                try:
                    with open(fs.join(path, "cgroup.procs")) as f:
                        return [int(x) for x in f.read().split()]
                except OSError:
                    pass
    return []


def _freezer(cg: "dict[str, Any]") -> tuple[str, bool] | None:
    for k, path in (cg.get("paths") or {}).items():
        if cg.get("mode") == "v2":
            return path, True
        if "freezer" in k.split(","):
            return path, False
    return None


def is_frozen(cg: "dict[str, Any]") -> bool:
    fz = _freezer(cg)
    if not fz:
        return False
    try:
        if fz[1]:
            return "frozen 1" in _read(fs.join(fz[0], "cgroup.events"))
        return _read(fs.join(fz[0], "freezer.state")) == "FROZEN"
    except OSError:
        return False


def freeze(cg: "dict[str, Any]", frozen: bool) -> None:
    fz = _freezer(cg)
    if not fz:
        raise PyruncError("freezer cgroup is not available")
    path, v2 = fz
    for _ in range(2000):
        if v2:
            _write(fs.join(path, "cgroup.freeze"), "1" if frozen else "0")
        else:
            _write(fs.join(path, "freezer.state"), "FROZEN" if frozen else "THAWED")
        if is_frozen(cg) == frozen:
            return
        time.sleep(0.001)
    raise PyruncError("timed out waiting for the freezer")


def remove(cg: "dict[str, Any]", made: list[str] | None = None) -> None:
    """rmdir the container's cgroups; a dying cgroup can be busy for a moment, so retry."""
    paths = made if made is not None else list((cg.get("paths") or {}).values())
    for path in sorted(paths, key=len, reverse=True):
        _rmdir_tree(path)


def _rmdir_tree(path: str) -> None:
    """rmdir path, after the cgroups the container made under it if it has any (the usual
    empty cgroup goes with one call: no stat or listing of each hierarchy first)."""
    for i in range(501):
        try:
            posix.rmdir(path)
            return
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError:
            if i == 0:
                for entry in posix.scandir(path):
                    if entry.is_dir(follow_symlinks=False):
                        _rmdir_tree(entry.path)
            else:
                time.sleep(0.002 if i < 50 else 0.01)
    raise PyruncError(f"cgroup {path} still busy")


def prewarm() -> None:
    """Start a no-op migration (our own pid into our own cgroup) on a side thread.

    The first write to any cgroup.procs takes the kernel's cgroup threadgroup lock through a
    full RCU grace period (10-20 ms here); writes that follow within a grace period are cheap.
    Paying it while `exec` loads and checks the state takes it off the critical path. Only an
    exec into a container with a user or cgroup namespace needs it; otherwise neither `exec` nor
    `create` moves anything through cgroup.procs (see `join_self_v1`), and the grace period
    would only hold up their own joins, which wait for cgroup_mutex.
    """
    import _thread

    def warm() -> None:
        try:
            with open("/proc/self/cgroup") as f:
                for line in f:
                    _, ctrls, path = line.rstrip("\n").split(":", 2)
                    mnt = ROOT + ("/unified" if not ctrls and fs.isdir(ROOT + "/unified") else
                                  "" if not ctrls else "/" + ctrls.replace("name=", ""))
                    procs = mnt + path + "/cgroup.procs"
                    if fs.exists(procs):
                        fd = posix.open(procs, posix.O_WRONLY | posix.O_CLOEXEC)
                        try:
                            posix.write(fd, str(posix.getpid()).encode())
                        finally:
                            posix.close(fd)
                        return
        except (OSError, ValueError):
            pass

    import sys
    # hand it the GIL within 0.1 ms, not the default 5: it needs it only until its write
    # blocks in the kernel (and releases it), while this thread imports and parses
    sys.setswitchinterval(0.0001)
    _thread.start_new_thread(warm, ())
