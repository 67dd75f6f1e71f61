"""Writing the daemon's files, and the modes of what it keeps.

Every file cri_shim replaces goes through `write_atomic` (temp file, fsync, rename, fsync the
directory: oci/atomic_file.py, the one writer both layers share), or through `commit` when the
content streams into a temp file first. Files in the state directory go through `write_state`:
atomic, not durable (see there).

The modes: the daemon's root and state directories and every file that holds configuration
(container specs with env values, which is how Kubernetes Secrets often arrive; pod configs;
CNI results) are for root only. Pod files that containers bind-mount (hosts, resolv.conf,
hostname) stay 0644, readable by any user inside the container.
"""

from __future__ import annotations

import os
from pathlib import Path

from oci import atomic_file as _writer
from oci.atomic_file import commit, fsync_dir

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "SHARED_FILE", "commit", "fsync_dir", "private_dir",
           "write_atomic", "write_state"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SHARED_FILE = 0o644


def private_dir(path: Path) -> Path:
    """Create path (and parents) if needed, and make it root-only even if it existed."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def write_atomic(path: Path, data: bytes | str, mode: int = SHARED_FILE, *,
                 tmp_dir: Path | None = None, durable: bool = True) -> None:
    """Create path's directory if needed, then write path atomically with exactly `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _writer.write_atomic(path, data, mode, tmp_dir=tmp_dir, durable=durable)


def write_state(path: Path, data: bytes | str, mode: int = SHARED_FILE) -> None:
    """write_atomic without the fsyncs, for a file in the state directory (/run/cri-shim: a
    tmpfs on most hosts, gone at reboot). Such a file describes what a host crash ends anyway
    (a pod's namespaces and infra process, a bundle, a cached CNI result for a namespace that
    is gone), and its readers tolerate its absence; a restart of the daemon alone keeps the
    page cache, so it still finds the file whole. Like the bundles and pid files runc,
    containerd and CRI-O write there. Readers never see a torn file: the rename stays."""
    write_atomic(path, data, mode, durable=False)
