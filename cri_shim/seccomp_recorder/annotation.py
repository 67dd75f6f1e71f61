"""The recorder's annotation and what its value means (pure).

`seccomp-recorder.cri-shim.io/profile: "of:NAME"` on a container (ContainerConfig.annotations)
or on its pod (PodSandboxConfig.annotations; the container's wins) records that container's
system calls into the file NAME of the configured directory (`[seccomp] recorder_dir`). `of:`
says "output file", as in CRI-O's `io.containers.trace-syscall`, so other keys (an input
profile to start from, say) can be added later. NAME is one plain file name: letters, digits,
`.`, `_`, `-`, not starting with `.`, at most 255 bytes. It cannot name a directory or leave
the recorder directory, so the written file is always `<recorder_dir>/NAME`, an absolute path
a later container can give as its Localhost profile (`localhost_ref`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from cri_shim.errors import InvalidArgument

ANNOTATION = "seccomp-recorder.cri-shim.io/profile"
PREFIX = "of:"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


def parse(value: str, where: str) -> str:
    """The file name in an annotation value; InvalidArgument naming the annotation and `where`
    (e.g. "container 'web'") otherwise."""
    what = f"{where}: annotation {ANNOTATION}={value!r}"
    if not value.startswith(PREFIX):
        raise InvalidArgument(f"{what}: the value must be {PREFIX}NAME (the output file's name)")
    name = value[len(PREFIX):]
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what}: {name!r} is not a plain file name inside the recorder directory "
            "(letters, digits, '.', '_', '-'; no '/', no leading '.', at most 255 characters)")
    return name


def requested(container: Mapping[str, str], pod: Mapping[str, str], container_name: str,
              pod_name: str) -> str | None:
    """The file name a container's recording goes to, or None when it is not recorded."""
    if ANNOTATION in container:
        return parse(container[ANNOTATION], f"container {container_name!r}")
    if ANNOTATION in pod:
        return parse(pod[ANNOTATION], f"pod {pod_name!r}")
    return None


def output_path(recorder_dir: str | Path, name: str) -> Path:
    return Path(recorder_dir) / name


def partial_path(output: Path) -> Path:
    """Where an interrupted recording goes (the tracer detached before the container exited):
    never the requested name, so a profile that misses calls is never taken for a whole one."""
    return output.with_name(output.name + ".partial")
