"""conmon's cgroup: under the pod's cgroup parent (default) or under a runtime cgroup.

Like CRI-O's `conmon_cgroup = "pod"`: conmon, and the OCI runtime's `create` it runs,
are then accounted to the pod (within its limits) instead of to the daemon. Each
container's conmon gets its own cgroup, cri-shim-conmon-<container id>, in every
hierarchy; the path is recorded in the bundle so removal finds it even if the
configuration changed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from cri_shim import cgroup_paths, cgroupfs
from cri_shim.atomic_file import write_state
from cri_shim.config import Config
from cri_shim.containers.spec_gen import PodContext
from cri_shim.errors import Internal

log = logging.getLogger("cri_shim.containers")

RECORD = "conmon-cgroup"
# conmon exits right after it records the container's exit; give it that long.
REMOVE_TIMEOUT = 5.0


async def prepare(config: Config, pod: PodContext, container_id: str, bundle: Path) -> tuple[Path, ...]:
    """Create the cgroup for this container's conmon; return the files conmon joins it by."""
    rel = cgroup_paths.conmon_cgroup(config.cgroup_driver, config.conmon_cgroup, pod.cgroup_parent,
                                     pod.id, container_id)
    # Recorded before it exists, so a failure half-way is still cleaned up by remove().
    await asyncio.to_thread(write_state, bundle / RECORD, rel + "\n")
    try:
        return tuple(await asyncio.to_thread(cgroupfs.create, rel))
    except OSError as e:
        raise Internal(f"container {container_id}: creating conmon's cgroup {rel}: {e}") from None


async def remove(bundle: Path) -> None:
    """Remove the cgroup recorded in the bundle, once conmon has left it."""
    rel = ""
    with contextlib.suppress(OSError):
        rel = (bundle / RECORD).read_text().strip()
    if not rel:
        return
    for err in await asyncio.to_thread(cgroupfs.remove, rel, None, REMOVE_TIMEOUT):
        log.warning("conmon cgroup not removed: %s", err)
