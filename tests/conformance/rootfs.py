"""A minimal busybox root filesystem, built from the host's static busybox."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = "/bin/busybox"

APP_UID = 1000
APP_GID = 1000
EXTRA_GID = 2000

PASSWD = f"""root:x:0:0:root:/root:/bin/sh
app:x:{APP_UID}:{APP_GID}:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = f"""root:x:0:
tty:x:5:
app:x:{APP_GID}:
extra:x:{EXTRA_GID}:app
nogroup:x:65534:
"""


def build_busybox_rootfs(dest: Path) -> Path:
    """Create ``dest`` with /bin/busybox and a symlink per applet, users and the usual dirs."""
    if not os.access(BUSYBOX, os.X_OK):
        raise RuntimeError(f"{BUSYBOX} is missing: install busybox-static")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "root", "home/app", "run",
              "var"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    _copy_shared_libraries(BUSYBOX, dest)
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("rootfs\n")
    os.chown(dest / "home" / "app", APP_UID, APP_GID)
    return dest


def _copy_shared_libraries(binary: str, dest: Path) -> None:
    """Debian's `busybox` package (which replaces busybox-static when installed) is dynamically
    linked: without its loader and libraries in the rootfs every exec fails with ENOENT."""
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if ldd.returncode != 0:  # "not a dynamic executable": the static build needs nothing
        return
    for line in ldd.stdout.splitlines():
        paths = [word for word in line.split() if word.startswith("/")]
        if not paths:
            continue  # linux-vdso.so.1 lives in the kernel
        target = dest / paths[0].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(paths[0]), target)
