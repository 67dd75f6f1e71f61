"""Device nodes of the host, as a container's config (CRI devices, CDI device nodes) names them."""

from __future__ import annotations

import os
import stat

from cri_shim.errors import InvalidArgument


def host_device(path: str, what: str) -> tuple[str, int, int, int]:
    """(type "c"/"b", major, minor, mode) of the device node at path on the host; InvalidArgument
    starting with `what` when it is missing or not a device."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidArgument(f"{what}: {e.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidArgument(f"{what} is not a device node (character or block)")
    return kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode)
