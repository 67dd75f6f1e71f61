"""CheckpointContainer (KEP-2008, the kubelet's /checkpoint API): a running container's
processes dumped by CRIU through its OCI runtime, packed with its config and file-system
changes into one tar archive at the request's `location`.

The archive has the layout CRI-O and containerd write and checkpointctl reads:

    checkpoint/       CRIU's images (`<runtime> checkpoint --image-path`)
    config.dump       id, name, image, runtime, creation and checkpoint times (JSON)
    spec.dump         the container's OCI spec (its bundle's config.json)
    status.dump       the CRI ContainerStatus (JSON; containerd writes it, its restore reads it)
    rootfs-diff.tar   the overlay's upper directory, without whiteouts and mount points
    deleted.files     JSON list of the paths the container deleted (only when there are any)
    dump.log, stats-dump, container.log

The container keeps running (`--leave-running`), as the kubelet's forensic checkpoint wants.
It is not paused around the dump, so files it writes meanwhile can make rootfs-diff.tar a
little newer than the process images.

CRIU is `Config.criu`. It is checked once (`criu check`) the first time it is needed; when it
is missing or fails, and for a runtime that cannot checkpoint (crun built without CRIU,
pyrunc), the call answers UNIMPLEMENTED with the reason. runc gets CRIU with `--criu`; crun
runs `criu` from PATH through libcriu, so the directory of Config.criu goes first on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import stat
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.json_format import MessageToDict

from cri_shim.containers.store import RUNNING
from cri_shim.errors import FailedPrecondition, Internal, InvalidArgument, Unimplemented
from cri_shim.runtimes.conmon_oci import ConmonOCIRuntime

if TYPE_CHECKING:
    from cri_shim.containers.manager import ContainerManager

METHOD = "/runtime.v1.RuntimeService/CheckpointContainer"
# Paths whose changes are never part of the file-system diff (libpod's containerMounts).
CONTAINER_MOUNTS = ("/dev", "/dev/shm", "/proc", "/run", "/sys")
CRIU_CHECK_TIMEOUT = 60.0

# criu path -> None (works) or why not; `criu check` is run once per path.
_criu_verdicts: dict[str, str | None] = {}


async def _run(argv: list[str], env: dict[str, str] | None = None,
               timeout: float | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {timeout}s"
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def criu_problem(criu: str) -> str | None:
    """None when `criu check` passes, else what failed (version and criu's error lines)."""
    if criu in _criu_verdicts:
        return _criu_verdicts[criu]
    path = shutil.which(criu)
    if path is None:
        verdict: str | None = f"criu binary {criu!r} not found"
    else:
        _, version = await _run([path, "--version"], timeout=CRIU_CHECK_TIMEOUT)
        code, out = await _run([path, "check"], timeout=CRIU_CHECK_TIMEOUT)
        if code == 0:
            verdict = None
        else:
            errors = [line for line in out.splitlines() if "Error" in line] or out.splitlines()[-3:]
            verdict = (f"`{path} check` failed ({' '.join(version.split())}): "
                       + "; ".join(errors))
    _criu_verdicts[criu] = verdict
    return verdict


async def _runtime_command(rt: ConmonOCIRuntime, criu: str, container_id: str, images: Path,
                           work: Path) -> tuple[list[str], dict[str, str] | None]:
    """The runtime's checkpoint command line and environment; Unimplemented when it has none."""
    binary = rt.oci.binary
    name = Path(binary).name
    global_args = rt.oci.runtime_args()
    tail = ["checkpoint", "--image-path", str(images), "--work-path", str(work),
            "--leave-running", container_id]
    criu_path = shutil.which(criu) or criu
    if name.startswith("runc"):
        return [binary, *global_args, "--criu", criu_path, *tail], None
    if name.startswith("crun"):
        _, version = await _run([binary, "--version"], timeout=10)
        if "+CRIU" not in version:
            first = version.splitlines()[0] if version else name
            raise Unimplemented(f"{METHOD}: handler {rt.name}: {binary} ({first}) was built "
                                "without CRIU support (its --version lacks +CRIU)")
        env = dict(os.environ)
        env["PATH"] = f"{Path(criu_path).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        return [binary, *global_args, *tail], env
    raise Unimplemented(f"{METHOD}: handler {rt.name}: runtime {binary} cannot checkpoint "
                        "(only runc and crun can)")


def _dump_errors(work: Path) -> str:
    try:
        lines = (work / "dump.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if "Error" in line]
    return "; ".join(errors[-5:])


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _skipped(rel: str, mount_points: set[str]) -> bool:
    path = "/" + rel
    if path in mount_points:
        return True
    return any(path == m or path.startswith(m + "/") for m in CONTAINER_MOUNTS)


def write_rootfs_diff(upper: Path, out: Path, mount_points: set[str]) -> list[str]:
    """rootfs-diff.tar from an overlay upper directory; returns the deleted paths (whiteouts)."""
    deleted: list[str] = []
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(upper):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(upper).as_posix()
                if _skipped(rel, mount_points):
                    continue
                st = full.lstat()
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    deleted.append("/" + rel)  # an overlay whiteout
                    continue
                tar.add(full, arcname=rel, recursive=False)
    return deleted


def _write_archive(location: Path, parts: Path) -> None:
    tmp = location.with_name(f".{location.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(parts.iterdir()):
                tar.add(entry, arcname=entry.name)
        os.replace(tmp, location)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _collect(manager: ContainerManager, container_id: str, parts: Path, status_dump: dict,
             config_dump: dict) -> None:
    """Everything but the CRIU images, into `parts` (run in a thread)."""
    c = manager.get(container_id)
    bundle = Path(c.meta.bundle)
    spec_text = (bundle / "config.json").read_text()
    (parts / "spec.dump").write_text(spec_text)
    (parts / "config.dump").write_text(json.dumps(config_dump, indent=2))
    (parts / "status.dump").write_text(json.dumps(status_dump, indent=2))
    spec = json.loads(spec_text)
    mount_points = {m.get("destination", "") for m in spec.get("mounts", [])}
    rootfs = Path(c.meta.rootfs) if c.meta.rootfs else None
    if rootfs is not None and rootfs.name == "merged" and (rootfs.parent / "upper").is_dir():
        deleted = write_rootfs_diff(rootfs.parent / "upper", parts / "rootfs-diff.tar", mount_points)
        if deleted:
            (parts / "deleted.files").write_text(json.dumps(deleted))
    if c.meta.log_path and os.path.isfile(c.meta.log_path):
        shutil.copyfile(c.meta.log_path, parts / "container.log")


async def checkpoint(manager: ContainerManager, container_id: str, location: str) -> None:
    # A node without a working CRIU cannot checkpoint anything: that answer comes first.
    problem = await criu_problem(manager.config.criu)
    if problem is not None:
        raise Unimplemented(f"{METHOD}: CRIU does not work on this node: {problem}")
    if not container_id:
        raise InvalidArgument(f"{METHOD}: container_id is empty")
    if not location or not os.path.isabs(location):
        raise InvalidArgument(f"{METHOD}: location {location!r} must be an absolute file path")
    target = Path(location)
    if not target.parent.is_dir():
        raise InvalidArgument(f"{METHOD}: location {location}: directory {target.parent} does not exist")
    if target.is_dir():
        raise InvalidArgument(f"{METHOD}: location {location} is a directory")
    c = manager.get(container_id)
    rt = manager.handlers.runtime(c.meta.handler)
    rt = getattr(rt, "inner", rt)  # the ObservedRuntime wrapper (runtime metrics)
    if not isinstance(rt, ConmonOCIRuntime):
        raise Unimplemented(f"{METHOD}: handler {c.meta.handler} cannot checkpoint (only runc and crun can)")
    criu = manager.config.criu
    async with c.lock:
        manager._check_exit(c)
        if c.status.state != RUNNING:
            raise FailedPrecondition(f"container {c.meta.id} is not running ({c.status.state})")
        status, _ = manager.status(c.meta.id)
        work = Path(c.meta.bundle) / f"checkpoint-{secrets.token_hex(6)}"
        parts = work / "archive"
        images = parts / "checkpoint"
        try:
            images.mkdir(parents=True, mode=0o700)
            argv, env = await _runtime_command(rt, criu, c.meta.id, images, work)
            code, out = await _run(argv, env)
            if code != 0:
                detail = _dump_errors(work) or out
                raise Internal(f"{METHOD}: {Path(argv[0]).name} checkpoint of {c.meta.id} failed: {detail}")
            for name in ("dump.log", "stats-dump"):
                if (work / name).exists():
                    shutil.copyfile(work / name, parts / name)
            config_dump = {
                "id": c.meta.id, "name": c.meta.name,
                "rootfsImage": c.meta.image_ref, "rootfsImageRef": c.meta.image_repo_ref or c.meta.image_id,
                "rootfsImageName": c.meta.image_ref, "runtime": c.meta.handler,
                "createdTime": _rfc3339(c.meta.created_at), "checkpointedAt": _rfc3339(time.time_ns()),
            }
            status_dump = MessageToDict(status, preserving_proto_field_name=True)
            await asyncio.to_thread(_collect, manager, c.meta.id, parts, status_dump, config_dump)
            await asyncio.to_thread(_write_archive, target, parts)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
